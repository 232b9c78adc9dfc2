"""A real HTTP server on loopback that speaks the chat-completions protocol, scripted by markers
in the prompt text, for the endpoint judge tests:

    [good:N]   answers "N", with top_logprobs: N 0.6, the next digit 0.3, a non-digit token 0.1
    [garbage]  answers prose without a score
    [stall]    sleeps `stall_s` before answering (past the client's timeout)
    [429xK]    answers 429 (Retry-After: 0) to the first K attempts, then like [good:5]
    [500xK]    answers 500 to the first K attempts, then like [good:5]
    [500]      always answers 500
    [image]    answers "5" if the request carries image data URLs (their bytes are recorded)
    [slow]     waits `slow_s`, then like [good:3]
"""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MARKER = re.compile(r"\[(good:\d|garbage|stall|429x\d|500x\d|500|image|slow)\]")


class ScriptedJudge:
    def __init__(self, stall_s: float = 3.0, slow_s: float = 0.2):
        self.stall_s, self.slow_s = stall_s, slow_s
        self.attempts: Counter[str] = Counter()  # prompt text -> requests received
        self.images: dict[str, list[bytes]] = {}
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with judge.lock:
                    judge.in_flight += 1
                    judge.max_in_flight = max(judge.max_in_flight, judge.in_flight)
                try:
                    status, payload, headers = judge.answer(self.path, body)
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)
                finally:
                    with judge.lock:
                        judge.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> ScriptedJudge:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, body: dict) -> tuple[int, dict, dict]:
        if path != "/v1/chat/completions":
            return 404, {"error": f"no route {path}"}, {}
        content = body["messages"][0]["content"]
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
        with self.lock:
            self.attempts[text] += 1
            attempt = self.attempts[text]
            self.bodies.append(body)
        found = MARKER.search(text)
        marker = found.group(1) if found else "garbage"
        if marker == "stall":
            time.sleep(self.stall_s)
            return 200, completion("3", body), {}
        if marker == "slow":
            time.sleep(self.slow_s)
            return 200, completion("3", body), {}
        if marker.startswith("good:"):
            return 200, completion(marker[5:], body), {}
        if marker == "garbage":
            return 200, completion("I cannot really tell, it depends.", body), {}
        if marker == "500":
            return 500, {"error": "internal error"}, {}
        if marker[:4] in ("429x", "500x") and attempt <= int(marker[4:]):
            status = int(marker[:3])
            return status, {"error": "try later"}, ({"Retry-After": "0"} if status == 429 else {})
        if marker == "image":
            if not urls or not all(u.startswith("data:image/") for u in urls):
                return 200, completion("no image here", body), {}
            with self.lock:
                self.images[text] = [base64.b64decode(u.split(",", 1)[1]) for u in urls]
            return 200, completion("5", body), {}
        return 200, completion("5", body), {}


def completion(content: str, request: dict) -> dict:
    choice: dict = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if request.get("logprobs") and content.isdigit():
        digit = int(content)
        runner_up = str(digit % 5 + 1)
        top = [
            {"token": content, "logprob": math.log(0.6)},
            {"token": " " + runner_up, "logprob": math.log(0.3)},
            {"token": "The", "logprob": math.log(0.1)},
        ]
        choice["logprobs"] = {"content": [{"token": content, "logprob": math.log(0.6), "top_logprobs": top}]}
    return {"id": "cmpl-test", "object": "chat.completion", "model": request.get("model"), "choices": [choice]}
