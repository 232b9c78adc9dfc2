"""Fit the verified method's rule (`conf/decontaminate/verifier.yaml`) on tuning seeds of the
labelled set (`bench/decontam_labelled.py`):

    .venv/bin/python bench/decontam_fit.py --seed 1 2 3 4 --cache .cache/decontam_recall \
        --out conf/decontaminate/verifier.yaml

A logistic regression over the verifier's features (`inliers` as log1p), standardised, with an L2
penalty whose strength is chosen by leave-one-seed-out among STRENGTHS (the strength whose rules,
each fitted on the other seeds, find the most held-out copies, a false hit counting
FALSE_HIT_COST copies; ties go to the stronger penalty). It is fitted on the candidate pairs the
rule decides: below the SSCD threshold (a pair at or above it is a hit whatever the rule says),
not identical bytes, and not rejected by a veto. Negatives weigh `--negative-weight` times a copy
(a false hit costs more than a miss); the decision sits `--margin` logits above the best-scoring
non-copy pair of the tuning seeds. Evaluation seeds (>= EVALUATION_FROM) are refused.
The YAML keeps the loader's format (weights, bias, decision, vetoes); its header says the command
and, in a `# fit:` line, the settings `bench/decontam_recall.py` reuses for its held-out families.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from decontam_labelled import EVALUATION_FROM

from udfs.verify import FEATURES, VerifierRule

STRENGTHS = (0.001, 0.01, 0.1, 1.0, 10.0)
FALSE_HIT_COST = 10
DEFAULT_VETOES = ("tiles_unexplained>0.05", "frame_nesting<0.9", "tiles_textured<0.02", "residual_peak>40")
DEFAULT_EXCLUDED = ("frame_nesting",)


def parse_vetoes(items: list[str] | tuple[str, ...]) -> dict[str, dict[str, float]]:
    """`'FEATURE>X'` / `'FEATURE<X'` as {feature: {above|below: x}}."""
    vetoes: dict[str, dict[str, float]] = {}
    for item in items:
        match = re.fullmatch(r"(\w+)\s*([<>])\s*([-+0-9.eE]+)", item)
        if not match or match[1] not in FEATURES:
            raise SystemExit(f"--veto {item!r}: expected FEATURE>X or FEATURE<X with FEATURE one of {list(FEATURES)}")
        vetoes.setdefault(match[1], {})["above" if match[2] == ">" else "below"] = float(match[3])
    return vetoes


def fit_rule(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    strength: float,
    margin: float = 1.5,
    negative_weight: float = 80.0,
    vetoes: dict[str, dict[str, float]] | None = None,
    excluded: tuple[str, ...] = DEFAULT_EXCLUDED,
) -> tuple[VerifierRule, dict[str, float]]:
    """(the rule, its standardised weights): weighted logistic regression with L2 `strength` on
    standardised features, fitted on the pairs no veto rejects (the caller passes only the pairs
    the rule decides)."""
    from scipy.optimize import minimize

    vetoes = dict(vetoes or {})
    names = [name for name in FEATURES if name not in excluded]
    kept = ~VerifierRule({}, 0.0, 0.5, vetoes).vetoed(features)
    x = np.nan_to_num(
        VerifierRule(dict.fromkeys(names, 0.0), 0.0, 0.5).design({n: v[kept] for n, v in features.items()})
    )
    y = labels[kept].astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    std = np.where(std > 1e-6, std, 1.0)  # a constant feature stays at weight 0
    z = (x - mean) / std
    positive = max(y.mean(), 1e-9)
    sample_weight = np.where(y == 1, 0.5 / positive, negative_weight * 0.5 / max(1 - positive, 1e-9)) / len(y)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        logits = z @ w + b
        log_p = -np.logaddexp(0, -logits)  # log sigmoid
        log_not_p = -np.logaddexp(0, logits)
        value = -float((sample_weight * (y * log_p + (1 - y) * log_not_p)).sum()) + 0.5 * strength * float(w @ w)
        residual = sample_weight * (np.exp(log_p) - y)
        return value, np.append(z.T @ residual + strength * w, residual.sum())

    theta = minimize(loss, np.zeros(z.shape[1] + 1), jac=True, method="L-BFGS-B").x
    w, b = theta[:-1], theta[-1]
    weights = w / std
    bias = b - float((w * mean / std).sum())
    negatives = (bias + x @ weights)[y == 0]
    decision_logit = (negatives.max() if len(negatives) else 0.0) + margin
    decision = float(1 / (1 + np.exp(-decision_logit)))
    rule = VerifierRule(
        {n: round(float(v), 4) for n, v in zip(names, weights, strict=True)},
        round(float(bias), 4),
        min(max(round(decision, 6), 1e-6), 1 - 1e-6),
        vetoes,
    )
    return rule, {n: round(float(v), 3) for n, v in zip(names, w, strict=True)}


Fit = Callable[[dict[str, np.ndarray], np.ndarray], VerifierRule]


def out_of_fold(features: dict[str, np.ndarray], labels: np.ndarray, folds: np.ndarray, fit: Fit) -> np.ndarray:
    """Accepted pairs when each fold is judged by a rule fitted on the other folds."""
    accepted = np.zeros(len(labels), bool)
    for fold in np.unique(folds):
        held = folds == fold
        rule = fit({name: values[~held] for name, values in features.items()}, labels[~held])
        accepted[held] = rule.score({name: values[held] for name, values in features.items()}) >= rule.decision
    return accepted


def choose_strength(
    features: dict[str, np.ndarray], labels: np.ndarray, seeds: np.ndarray, settings: dict
) -> tuple[float, list[str]]:
    """The L2 strength by leave-one-seed-out, and a line per strength saying how it did."""
    lines, best, chosen = [], None, STRENGTHS[-1]
    for strength in STRENGTHS:
        accepted = out_of_fold(features, labels, seeds, lambda f, y, s=strength: fit_rule(f, y, s, **settings)[0])
        copies, false_hits = int((accepted & labels).sum()), int((accepted & ~labels).sum())
        merit = copies - FALSE_HIT_COST * false_hits
        lines.append(f"  l2 {strength:g}: out of fold {copies}/{int(labels.sum())} copies, {false_hits} false hits")
        if best is None or merit >= best:  # ties: the stronger penalty (STRENGTHS ascend)
            best, chosen = merit, strength
    return chosen, lines


def settings_of(args: argparse.Namespace) -> dict:
    return {
        "margin": args.margin,
        "negative_weight": args.negative_weight,
        "vetoes": parse_vetoes(args.veto),
        "excluded": tuple(args.exclude),
    }


def read_settings(rule_path: str | Path) -> dict | None:
    """The `# fit:` settings a rule file was fitted with (None for a rule without them)."""
    for line in Path(rule_path).read_text().splitlines():
        if line.startswith("# fit: "):
            saved = json.loads(line[len("# fit: ") :])
            return {**saved, "excluded": tuple(saved["excluded"])}
    return None


def add_fit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--margin", type=float, default=1.5, help="logits between the decision and the best negative")
    parser.add_argument("--negative-weight", type=float, default=80.0, help="a negative pair's weight over a copy's")
    parser.add_argument(
        "--veto",
        nargs="*",
        default=list(DEFAULT_VETOES),
        help="'FEATURE>X' or 'FEATURE<X': never a hit below the threshold",
    )
    parser.add_argument("--exclude", nargs="*", default=list(DEFAULT_EXCLUDED), help="features the weights leave out")


def main() -> None:
    from decontam_recall import add_measure_arguments, decided_by_rule, labels_of, measure_seeds

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_measure_arguments(parser)
    add_fit_arguments(parser)
    parser.add_argument("--l2", type=float, help="the L2 strength (default: chosen by leave-one-seed-out)")
    parser.add_argument("--out", help="write the rule here (YAML)")
    args = parser.parse_args()
    if any(seed >= EVALUATION_FROM for seed in args.seed):
        raise SystemExit(f"seeds from {EVALUATION_FROM} on are evaluation seeds: fit on tuning seeds only")
    measured = measure_seeds(args)
    decided = decided_by_rule(measured)
    labels = labels_of(measured)[decided]
    features = {name: values[decided] for name, values in measured.features.items()}
    settings = settings_of(args)
    print(f"fitting on {int(decided.sum())} candidate pairs below the threshold ({int(labels.sum())} copies)")
    strength = args.l2
    if strength is None:
        strength, lines = choose_strength(features, labels, measured.pair_seeds[decided], settings)
        print("leave-one-seed-out:\n" + "\n".join(lines) + f"\nchosen l2 {strength:g}")
    rule, standardised = fit_rule(features, labels, strength, **settings)
    print(f"standardised weights: {standardised}")
    print(f"weights: {dict(rule.weights)}, bias {rule.bias}, decision {rule.decision}")
    if args.out:
        command = " ".join(
            ["bench/decontam_fit.py", *(f"'{a}'" if re.search(r"[<> ]", a) else a for a in sys.argv[1:])]
        )
        saved = {**settings, "excluded": list(settings["excluded"]), "l2": strength}
        header = (
            f"# Fitted by: .venv/bin/python {command}\n"
            f"# on tuning seeds {' '.join(map(str, args.seed))} of bench/decontam_labelled.py ({len(measured.bench)} "
            f"benchmark images); standardised weights: {json.dumps(standardised)}\n"
            f"# fit: {json.dumps(saved)}\n"
            "# score = sigmoid(bias + sum(weight * feature)), inliers as log1p; below the SSCD threshold a pair\n"
            "# is a hit when score >= decision and no veto applies (at or above it, always a hit)\n"
        )
        body = {"weights": dict(rule.weights), "bias": rule.bias, "decision": rule.decision, "vetoes": rule.vetoes}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(header + yaml.safe_dump(body, sort_keys=False))
        print(f"rule written to {args.out}")


if __name__ == "__main__":
    main()
