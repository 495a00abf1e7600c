"""The two papers' published numbers and the k grid, typed once.

Every figure, notebook and README line that shows a paper's number beside
ours imports it from here (labelled as the paper's, never as ours).

* Paper A: Bhargava et al., *What's the Magic Word? A Control Theory of LLM
  Prompting* (arXiv 2310.04444), Sec. 5 and Fig. 2-4, plus the authors' later
  GPT-2 small run quoted in shared/DESIGN.md.
* Paper B: *Efficient Switchable Safety Control in LLMs via Magic-Token-Guided
  Co-Training* (arXiv 2508.14904).
"""
from __future__ import annotations

# The back-off grid of paper A's Algorithm 1: k = 0, greedy 1..3, GCG 4..10.
K_GRID: tuple[int, ...] = (0, 1, 2, 3, 4, 6, 8, 10)
K_KEYS: tuple[str, ...] = tuple(str(k) for k in K_GRID)     # the keys of eps(k) in results JSON

PAPER_A = {
    # true next token, GPT-2 small, N = 5000: eps(k) = share of instances not reached with <= k tokens
    "gpt2_small_eps": {0: .753, 1: .634, 2: .513, 3: .418, 4: .123, 6: .038, 8: .010, 10: .0032},
    "eps10": {"Falcon-7b": .028, "Llama-7b": .014, "Falcon-40b": .030},
    "top75_reachable_k10": (0.85, 0.89),      # share of top-75 targets reachable with k <= 10
    "uniform_reachable_k10": 0.46,            # share of uniform-rank targets reachable with k <= 10
    "corr_loss_k": (0.59, 0.70),              # Pearson r of base loss with required k
    "corr_rank_k": (0.12, 0.21),              # ... of base rank with required k
}

PAPER_B = {
    "sam_cotrained": 0.131,                   # Safety Alignment Margin of the co-trained model
    "sam_baselines": 0.03,                    # ... of the SFT / DPO baselines (about)
    "judge_accuracy": 0.975,                  # the paper's judge on its own labels
    "jailbreak_safety_drop": {"cotrained": 0.038, "baselines": 0.215},   # Fig. 1: loss of safety under attack
}
