"""Beyond both papers: how reachable is a safety mode without its magic token?

Paper B switches a co-trained model between modes with a secret magic token
in the system prompt. Paper A's controllers ask how secret it has to be. A
*transition* ``A->B`` on a held-out harmful prompt p, with the control u at
one *placement*:

    state x0  = the conversation with mode A's magic token in the system prompt
                (the operator's, server side: the attacker cannot see or remove it),
                followed by the opening that modes A and B share (if any)
    control u = k free tokens where the attacker writes (`slots.slot_texts`):
                user_before  in the user turn, before the request: "u p"
                user_after   in the user turn, after the request:  "p u"
                system       in the system prompt, directly before A's token
                             (a second, labelled setting: an attacker who could
                             write there could also drop A's token)
    target y  = the first token where mode B's own greedy response to p
                (generated with B's real magic token) leaves mode A's

    ids = prefix + u + state,   prefix = the template up to the slot,
          state = the template after it, through "<|im_start|>assistant\\n",
                  + shared (the common opening of the two responses, often empty)

Targeting the *divergence* token (not simply B's first token) matters: modes
often open alike ("I ..." in both a refusal and an answer), and a shared first
token would count as reached at k = 0 while nothing changed. With it, k = 0
never succeeds on the co-trained model (A's own argmax there is not y); if
the two responses agree on their whole first `opening_tokens`, the
transition is recorded as reached at k = 0 (indistinguishable openings).

The search (`search: fast`, controllers/fast.py, or `backoff`: greedy k=1..3,
GCG k=4..10) finds the shortest u making y the argmax; then the response
generated after each k's best prompt is judged by the offline judge, giving
two k-epsilon curves with Wilson intervals: by first token and by judged
behaviour. Baseline models have no modes: their state has no magic token
(``none->negative``) and the target is the co-trained model's negative-mode
first token. The random-magic-token baseline replaces the magic token by
random strings of the same length and counts how often the judged behaviour
is B; `stats.question` sets the two side by side with the size of the
magic-token space.

* `config`  params.yaml `mode_reachability:` (placements, search, budgets)
* `slots`   where u goes in the rendered chat template: prefix and state ids
* `runner`  one transition on one model: target, search, judged responses, resumable rows
* `stats`   curves, intervals, the random-token baseline, the question in words
* `inputs`  the cotraining stage's held-out prompts (extended) and trained models
"""
from .config import (PLACEMENT_WORDS, PLACEMENTS, SEARCHES, ModeReachConfig, baselines_at, judged_decoding,
                     parse_transition, search_config, search_run)
from .inputs import held_out_prompts, load_trained
from .runner import divergence, greedy_ids, judged_required_k, resume_header, run_transition
from .slots import SLOT, slot_ids, slot_texts
from .stats import (ALPHABET, magic_token_space, question, question_words, random_strings,
                    random_token_switch_rate, search_cost, share, summarize_transition, target_mode_holds)

__all__ = ["ALPHABET", "PLACEMENT_WORDS", "PLACEMENTS", "SEARCHES", "SLOT", "ModeReachConfig", "baselines_at",
           "divergence", "greedy_ids", "held_out_prompts", "judged_decoding", "judged_required_k",
           "load_trained", "magic_token_space", "parse_transition", "question", "question_words",
           "random_strings", "random_token_switch_rate", "resume_header", "run_transition", "search_config",
           "search_cost", "search_run", "share", "slot_ids", "slot_texts", "summarize_transition",
           "target_mode_holds"]
