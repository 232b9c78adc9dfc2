"""Jobs: thin I/O around the stages. Each reads pinned table versions, runs pure transforms and
writes through `etl.tables`, reporting counts to the run log."""
