"""Paper A's self-attention reachability theorem, corrected and checked numerically.

One attention head with query/key/value maps ``W_q, W_k, W_v`` (each ``d x d_h``)
reads ``X = [U; X0]``: ``k`` control rows ``U`` (``k x d``, ``||u_j|| <= M_u``)
before ``m`` state rows ``X0`` (``m x d``), causal mask, scores scaled by
``1/sqrt(d_h)``. Output row ``i`` of the state part (``i`` indexes ``X0``)::

    s_ij = (x_i W_q)(x_j W_k)^T / sqrt(d_h)        j <= i   (state keys)
    c_ij = (x_i W_q)(u_j W_k)^T / sqrt(d_h)        j = 1..k (control keys)
    Z_i  = sum_{j<=i} exp(s_ij)                    the attention row sum over x0
    C_i  = sum_j exp(c_ij)
    y_i  = (Z_i y0_i + sum_j exp(c_ij) u_j W_v) / (Z_i + C_i)
         = (1 - a_i) y0_i + a_i ubar_i,   a_i = C_i / (Z_i + C_i)

where ``y0_i`` is the head's output on ``X0`` alone (the *uncontrolled*
output) and ``ubar_i`` is a convex mix of the control values.

**Theorem (corrected).** Let ``sigma_q, sigma_k, sigma_v`` be the largest
singular values of ``W_q, W_k, W_v``, ``M_x = max_j ||x_j||`` over the rows
of ``X0``, ``E = exp(sigma_q sigma_k M_u M_x / sqrt(d_h))``. For every ``U``
with ``||u_j|| <= M_u``:

1. the control mass obeys ``a_min <= a_i <= a_max`` with
   ``a_max = k E / (Z_i + k E)`` and ``a_min = k E^-1 / (Z_i + k E^-1)``;
2. the part of ``y_i`` orthogonal to ``y0_i`` obeys
   ``||y_i_perp|| <= a_max sigma_v M_u``   (sigma_v, not sigma_q);
3. the parallel part is ``gamma y0_i`` with ``gamma`` in
   ``[1 - a_max (1 + rho), 1 + a* (rho - 1)]``, ``rho = sigma_v M_u / ||y0_i||``,
   ``a* = a_max if rho >= 1 else a_min``.

Hence a target row ``y*`` is excluded from the reachable set if
``||y* - (1 - a) y0_i|| > a sigma_v M_u`` for *every* admissible scaling
``a`` in ``[a_min, a_max]``; in particular if ``||y*_perp|| > a_max sigma_v M_u``.

*Proof sketch.* ``|c_ij| <= ||x_i W_q|| ||u_j W_k|| / sqrt(d_h) <= sigma_q M_x
sigma_k M_u / sqrt(d_h)``, so ``k/E <= C_i <= k E``, and ``a = C/(Z + C)`` is
increasing in ``C`` (1). ``||ubar_i|| <= max_j ||u_j W_v|| <= sigma_v M_u``
because ``ubar_i`` is a convex mix of the ``u_j W_v`` (this is where the
printed statement has sigma_q); ``y0_i`` has no orthogonal part, so
``y_i_perp = a_i ubar_i_perp`` (2). ``gamma = 1 - a + a t`` with
``t = <ubar, y0>/||y0||^2`` in ``[-rho, rho]``; extremise over ``a`` (3).
(The paper's looser ``k E / Z_i`` drops the ``+ k E`` of the denominator.)

RoPE rotates ``q`` and every key by position-dependent rotations: norms,
hence every step above, are unchanged, and state-to-state scores depend on
relative positions only, so shifting ``X0`` by ``k`` leaves ``Z_i`` and
``y0_i`` as they were: the theorem holds verbatim with RoPE (checked below
with ``rope=True``).

What `run` checks on a Hugging Face Llama (SmolLM2): for each chosen
(layer, head) the pre-attention inputs ``X0 = RMSNorm(h_layer)`` of Wikitext
spans (RMSNorm weight included), ``W_q, W_k, W_v`` = that head's slices of
``q_proj, k_proj, v_proj`` (GQA: query head ``h`` uses kv head
``h // (n_heads / n_kv_heads)``), the output row ``i = m - 1`` (the row that
predicts the next token), and continuous controls ``U`` in the ball
``||u_j|| <= M_u``; ``o_proj`` is left out (a fixed linear map after the head).

Modules: `head` (one head: extraction, outputs, the bound), `adversary`
(projected gradient ascent over continuous controls), `check` (the
numerical check over layers, heads, k and spans).
"""
from .adversary import ControlResult, optimise_control, random_controls, single_thread
from .check import Result, TheoremConfig, check_head, run, sample_x0
from .head import (DTYPE, VIOLATION_RTOL, Bound, Head, controlled, extract_head, layer_inputs, orthogonal_part,
                   parallel_scale, reachability_bound, resolve_layers, rmsnorm_ceiling, rope, rope_theta_of,
                   uncontrolled)

__all__ = ["DTYPE", "VIOLATION_RTOL", "Bound", "ControlResult", "Head", "Result", "TheoremConfig", "check_head",
           "controlled", "extract_head", "layer_inputs", "optimise_control", "orthogonal_part", "parallel_scale",
           "random_controls", "reachability_bound", "resolve_layers", "rmsnorm_ceiling", "rope", "rope_theta_of",
           "run", "sample_x0", "single_thread", "uncontrolled"]
