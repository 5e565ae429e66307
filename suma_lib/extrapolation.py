r"""One shared length-extrapolation experiment (Part V of the book).

A tiny causal decoder (:class:`TinyDecoder`) is trained at length :math:`L` on a synthetic task that needs
position, the *lagged copy* (:func:`lag_copy_batch`): read random tokens and, at every position
:math:`i`,
output the token :math:`s` places back,

.. math:: y_i = x_{i-s} \quad (i \ge s),

then evaluated without any change at :math:`L, 2L, 4L, 8L` (:func:`evaluate`). The task is local (the answer
is a fixed relative offset away), so it rewards a scheme that resolves *relative* position and keeps doing
so beyond the training length. The position scheme is the only thing that varies (:data:`SCHEMES`):

* ``"none"``: no position information (a causal decoder still sees the order through its mask);
* ``"sinusoidal"``: the Transformer's sinusoid added to the token embeddings;
* ``"rope"``, ``"xpos"``: rotary queries and keys (XPOS with its exponential decay, scale base
  :math:`L`);
* ``"alibi"``, ``"kerple"``, ``"sandwich"``: additive score terms (KERPLE in its log form, learned);
* ``"window"``: RoPE trained as usual, evaluated with local attention of width :math:`L` (each
  token sees
  the :math:`L` most recent tokens: the "super baseline" of 《Transformer升级之路：7》);
* ``"logn"``: RoPE with the :math:`\log_L n` attention scale;
* ``"random"``: RoPE trained on sorted random positions from :math:`\{0, \dots, 8L-1\}`, evaluated
  on
  :math:`0, 1, \dots`;
* ``"equal_mean"``, ``"equal_mean_logn"``: RoPE trained on the equal-mean positions
  (:math:`\operatorname{linspace}(0, 1, L)\cdot s`, :math:`s \sim \operatorname{Exp}(L)`), the latter with
  the :math:`\log_L n` scale as well.

:func:`run_grid` trains every scheme with every seed and returns a tidy table (one row per scheme, seed
and test length); :func:`summarise` reduces it over seeds (mean, standard deviation, min, max) and
:func:`format_table` prints it.

Chapters: notebooks/local-attention-extrapolation.md, notebooks/position-robustness.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ._validation import (
    check_choice,
    check_device,
    check_float,
    check_generator,
    check_int,
    check_tensor,
)
from .attention.multihead import MultiHeadAttention
from .position import (
    KERPLE,
    ALiBi,
    LogNScale,
    RotaryEmbedding,
    Sandwich,
    XPos,
    equal_mean_positions,
    random_positions,
    sinusoidal_encoding,
)
from .training import train

__all__ = [
    "SCHEMES",
    "TinyDecoder",
    "evaluate",
    "format_table",
    "lag_copy_batch",
    "run_grid",
    "summarise",
]

#: Every position scheme :class:`TinyDecoder` knows.
SCHEMES = (
    "none",
    "sinusoidal",
    "rope",
    "alibi",
    "kerple",
    "sandwich",
    "xpos",
    "window",
    "logn",
    "random",
    "equal_mean",
    "equal_mean_logn",
)
_ROTARY = ("rope", "window", "logn", "random", "equal_mean", "equal_mean_logn")
#: Random training positions are drawn from {0, ..., RANDOM_RANGE * L - 1} (the largest test
# length).
RANDOM_RANGE = 8


def lag_copy_batch(
    batch: int,
    length: int,
    vocab: int,
    lag: int = 1,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""A batch of the lagged-copy task: tokens :math:`x_i` uniform on :math:`\{0, \dots, V-1\}` and targets
    :math:`y_i = x_{i-s}` (:math:`i \ge s`; the first :math:`s` targets are ``-100``, ignored by the loss).

    Parameters
    ----------
    batch, length, vocab : int
        Batch size, sequence length :math:`n > s`, vocabulary size :math:`V \ge 2`.
    lag : int
        :math:`s \ge 1`.
    generator : torch.Generator, optional
        Source of the tokens (its device is used when ``device`` is not given).
    device

    Returns
    -------
    x, y : torch.Tensor, int64, shape ``(batch, length)``

    Notes
    -----
    Chapter: notebooks/local-attention-extrapolation.md.
    """
    batch = check_int(batch, "batch", low=1)
    lag = check_int(lag, "lag", low=1)
    length = check_int(length, "length", low=lag + 1)
    vocab = check_int(vocab, "vocab", low=2)
    check_generator(generator)
    dev = check_device(device)
    if dev is None:
        dev = generator.device if generator is not None else torch.device("cpu")
    x = torch.randint(vocab, (batch, length), generator=generator, device=dev)
    y = torch.full_like(x, -100)
    y[:, lag:] = x[:, :-lag]
    return x, y


class _Attention(MultiHeadAttention):
    """Causal attention whose position modules receive the current positions (rotary ones only)."""

    def __init__(
        self, d_model: int, heads: int, qk: list[nn.Module], bias: list[nn.Module]
    ) -> None:
        super().__init__(d_model, heads)
        self.qk_mods, self.bias_mods = nn.ModuleList(qk), nn.ModuleList(bias)
        self.positions: torch.Tensor | None = None

    def transform_qk(self, q, k):
        for mod in self.qk_mods:
            if isinstance(mod, LogNScale) or self.positions is None:
                q, k = mod(q, k)  # log n counts the keys a query sees: its index, not its position
            else:
                p = self.positions[:, None, :]  # (batch, 1, n): one set of positions per sequence
                q, k = mod(q, k, p, p)
        return q, k

    def get_bias(self, q, k):
        bias = None
        for mod in self.bias_mods:
            b = mod(q, k)
            bias = b if bias is None else bias + b
        return bias


class TinyDecoder(nn.Module):
    r"""A small pre-norm causal decoder whose only variable part is its position scheme.

    .. math:: h^{(0)} = E x\,(+\,\text{PE}),
              \quad h \leftarrow h + \operatorname{Attn}(\operatorname{LN}h),
              \quad h \leftarrow h + \operatorname{MLP}(\operatorname{LN}h),
              \quad \text{logits} = W\,\operatorname{LN}h.

    Parameters
    ----------
    scheme : str
        One of :data:`SCHEMES` (see the module's description).
    vocab, d_model, heads, layers : int
        Sizes (``d_model`` divisible by ``heads``, head width even).
    train_length : int
        :math:`L`: sets the :math:`\log_L n` scale, XPOS's scale base, the window and the random range.
    generator : torch.Generator, optional
        Initialises every parameter (weights :math:`\mathcal N(0, 1/\text{fan-in})`, biases 0, norms 1).
    device

    Notes
    -----
    Chapters: notebooks/local-attention-extrapolation.md, notebooks/position-robustness.md.
    """

    def __init__(
        self,
        scheme: str,
        vocab: int,
        d_model: int = 32,
        heads: int = 2,
        layers: int = 2,
        train_length: int = 16,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.scheme = check_choice(scheme, "scheme", SCHEMES)
        self.vocab = check_int(vocab, "vocab", low=2)
        self.d_model = check_int(d_model, "d_model", low=2)
        self.heads = check_int(heads, "heads", low=1)
        if self.d_model % self.heads or (self.d_model // self.heads) % 2:
            raise ValueError(f"d_model / heads must be an even integer, got {d_model} / {heads}")
        self.layers = check_int(layers, "layers", low=1)
        self.train_length = check_int(train_length, "train_length", low=2)
        check_generator(generator)
        hd = self.d_model // self.heads
        self.embed = nn.Embedding(self.vocab, self.d_model)
        blocks = []
        for _ in range(self.layers):
            qk: list[nn.Module] = []
            bias: list[nn.Module] = []
            if self.scheme in _ROTARY:
                qk.append(RotaryEmbedding(hd))
            if self.scheme in ("logn", "equal_mean_logn"):
                qk.append(LogNScale(self.train_length, causal=True))
            if self.scheme == "xpos":
                qk.append(XPos(hd, scale_base=float(self.train_length)))
            if self.scheme == "alibi":
                bias.append(ALiBi(self.heads))
            if self.scheme == "kerple":
                bias.append(KERPLE(self.heads, "log"))
            if self.scheme == "sandwich":
                bias.append(Sandwich(self.heads, dim=hd, scale=1.0))
            blocks.append(
                nn.ModuleDict(
                    {
                        "ln1": nn.LayerNorm(self.d_model),
                        "attn": _Attention(self.d_model, self.heads, qk, bias),
                        "ln2": nn.LayerNorm(self.d_model),
                        "mlp": nn.Sequential(
                            nn.Linear(self.d_model, 4 * self.d_model),
                            nn.GELU(),
                            nn.Linear(4 * self.d_model, self.d_model),
                        ),
                    }
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.ln = nn.LayerNorm(self.d_model)
        self.head = nn.Linear(self.d_model, self.vocab)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "log_r" in name:  # KERPLE keeps its own initial r1 = r2 = 1
                    continue
                if p.dim() >= 2:
                    p.copy_(
                        torch.randn(p.shape, generator=generator, device=p.device)
                        / math.sqrt(p.shape[-1])
                    )
                elif name.endswith("weight"):
                    p.fill_(1.0)
                else:
                    p.zero_()
        if device is not None:
            self.to(device)

    def extra_repr(self) -> str:
        """Settings shown by ``repr``."""
        return f"scheme={self.scheme!r}, train_length={self.train_length}"

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor | None = None, window: int | None = None
    ) -> torch.Tensor:
        """Logits ``(batch, n, vocab)`` of the tokens ``x`` ``(batch, n)``.

        ``positions`` ``(batch, n)`` replaces ``0, ..., n-1`` for the rotary schemes and the sinusoid;
        ``window`` restricts each query to itself and the ``window`` keys before it.
        """
        check_tensor(x, "x", min_dim=2)
        if x.dim() != 2:
            raise ValueError(f"x must have shape (batch, n), got {tuple(x.shape)}")
        if x.dtype != torch.int64:
            raise TypeError(f"x must hold int64 token ids, got {x.dtype}")
        ref = self.head.weight.device
        if x.device != ref:
            raise TypeError(f"x must be on the model's device {ref}, got {x.device}")
        if window is not None:
            window = check_int(window, "window", low=0)
        if positions is not None:
            check_tensor(positions, "positions", finite=True)
            if positions.device != ref:
                raise TypeError(
                    f"positions must be on the model's device {ref}, got {positions.device}"
                )
            if positions.shape != x.shape:
                raise ValueError(
                    f"positions must have the shape of x {tuple(x.shape)}, "
                    f"got {tuple(positions.shape)}"
                )
        h = self.embed(x)
        if self.scheme == "sinusoidal":
            pos = positions if positions is not None else torch.arange(x.shape[1], device=x.device)
            h = h + sinusoidal_encoding(pos.to(h.dtype), self.d_model).to(h.dtype)
        for block in self.blocks:
            attn = block["attn"]
            attn.positions, attn.window = positions, window
            try:
                h = h + attn(block["ln1"](h), causal=True)
            finally:
                attn.positions, attn.window = None, None
            h = h + block["mlp"](block["ln2"](h))
        return self.head(self.ln(h))

    def training_positions(
        self, batch: int, generator: torch.Generator | None
    ) -> torch.Tensor | None:
        """Positions for one training batch: random or equal-mean for those schemes, else ``None``."""
        L = self.train_length
        dev = self.head.weight.device
        if self.scheme == "random":
            return random_positions(
                L, RANDOM_RANGE * L, batch_shape=(batch,), generator=generator, device=dev
            )
        if self.scheme in ("equal_mean", "equal_mean_logn"):
            return equal_mean_positions(
                L,
                batch_shape=(batch,),
                generator=generator,
                device=dev,
                dtype=self.head.weight.dtype,
            )
        return None

    def test_positions(self, length: int) -> torch.Tensor | None:
        r"""Positions at evaluation: for ``"random"`` :math:`n` evenly spaced integers of the whole random
        range :math:`[0, 8L)` (the article's recommended evaluation), else ``None`` (:math:`0, 1, \dots`)."""
        if self.scheme != "random":
            return None
        top = RANDOM_RANGE * self.train_length - 1
        dev = self.head.weight.device
        return (
            torch.linspace(0, top, length, device=dev, dtype=torch.float64).round().to(torch.int64)
        )

    def test_window(self) -> int | None:
        """The window used at evaluation: ``L - 1`` earlier keys for ``"window"`` (L keys in all), else none."""
        return self.train_length - 1 if self.scheme == "window" else None


@torch.no_grad()
def evaluate(
    model: TinyDecoder,
    length: int,
    *,
    batch: int = 64,
    lag: int = 1,
    generator: torch.Generator | None = None,
) -> float:
    r"""Per-token accuracy of ``model`` on the lagged copy at ``length``.

    .. math:: \text{acc} = \frac{1}{B(n - s)}\sum_{b}\sum_{i \ge s}
              [\arg\max_v f(x_b)_{i v} = x_{b, i-s}]

    Test positions are :meth:`TinyDecoder.test_positions` (:math:`0, 1, \dots` but for ``"random"``),
    the window :meth:`TinyDecoder.test_window`.

    Notes
    -----
    Chapters: notebooks/local-attention-extrapolation.md, notebooks/position-robustness.md.
    """
    if not isinstance(model, TinyDecoder):
        raise TypeError(f"model must be a TinyDecoder, got {type(model).__name__}")
    dev = model.head.weight.device
    x, y = lag_copy_batch(batch, length, model.vocab, lag, generator=generator, device=dev)
    was = model.training
    model.eval()
    try:
        pos = model.test_positions(length)
        pos = None if pos is None else pos.expand(batch, length)
        pred = model(x, positions=pos, window=model.test_window()).argmax(-1)
    finally:
        model.train(was)
    keep = y != -100
    return float((pred[keep] == y[keep]).double().mean())


def run_grid(
    schemes: Sequence[str],
    seeds: Sequence[int],
    *,
    train_length: int = 16,
    factors: Sequence[int] = (1, 2, 4, 8),
    steps: int = 200,
    batch: int = 32,
    vocab: int = 16,
    lag: int = 1,
    d_model: int = 32,
    heads: int = 2,
    layers: int = 2,
    lr: float = 3e-3,
    eval_batch: int = 64,
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    r"""Train every scheme with every seed at length :math:`L` and test it at :math:`fL` for each factor.

    Seed :math:`k` fixes everything that is random in one run (initialisation, training batches and
    positions, test batches), so the same seed gives the same table; the test batches of seed
    :math:`k`
    are shared by all schemes. ``"window"`` differs from ``"rope"`` only at evaluation: with the same seed
    both are the same trained model (trained once when both are asked for), so their difference is the
    window's alone.

    Returns
    -------
    dict of numpy arrays
        A tidy table: columns ``scheme``, ``seed``, ``length``, ``accuracy`` (one row per scheme, seed and
        test length) and ``final_loss`` (the training loss of the last step, repeated over lengths).

    Notes
    -----
    Chapters: notebooks/local-attention-extrapolation.md, notebooks/position-robustness.md.
    """
    schemes = [check_choice(s, "schemes", SCHEMES) for s in schemes]
    seeds = [check_int(s, "seeds", low=0) for s in seeds]
    if not schemes or not seeds:
        raise ValueError("schemes and seeds must not be empty")
    lag = check_int(lag, "lag", low=1)
    L = check_int(train_length, "train_length", low=max(lag + 1, 2))
    factors = [check_int(f, "factors", low=1) for f in factors]
    steps = check_int(steps, "steps", low=0)
    batch = check_int(batch, "batch", low=1)
    lr = check_float(lr, "lr", low=0.0, low_open=True)
    dev = check_device(device) or torch.device("cpu")
    rows: dict[str, list] = {
        "scheme": [],
        "seed": [],
        "length": [],
        "accuracy": [],
        "final_loss": [],
    }
    for seed in seeds:
        trained: dict[str, tuple[TinyDecoder, float]] = {}
        for scheme in schemes:
            kind = "rope" if scheme == "window" else scheme
            if kind in trained:
                base, final = trained[kind]
                model = TinyDecoder(scheme, vocab, d_model, heads, layers, L, device=dev)
                model.load_state_dict(base.state_dict())
                _record(rows, model, scheme, seed, final, factors, L, eval_batch, lag, dev)
                continue
            g = torch.Generator(device=dev).manual_seed(1000 * seed + 1)
            model = TinyDecoder(kind, vocab, d_model, heads, layers, L, generator=g, device=dev)

            def sample(model=model, g=g):
                x, y = lag_copy_batch(batch, L, vocab, lag, generator=g, device=dev)
                return x, y, model.training_positions(batch, g)

            def loss(model, b):
                x, y, pos = b
                out = model(x, positions=pos)
                return nn.functional.cross_entropy(
                    out.flatten(0, -2), y.flatten(), ignore_index=-100
                )

            hist = train(model, sample, steps, loss=loss, lr=lr, progress=False)
            final = float(hist["loss"][-1]) if steps else float("nan")
            trained[kind] = (model, final)
            if scheme == "window":
                model = TinyDecoder(scheme, vocab, d_model, heads, layers, L, device=dev)
                model.load_state_dict(trained[kind][0].state_dict())
            _record(rows, model, scheme, seed, final, factors, L, eval_batch, lag, dev)
    return {k: np.asarray(v) for k, v in rows.items()}


def _record(rows, model, scheme, seed, final, factors, L, eval_batch, lag, dev) -> None:
    """Evaluate one trained model at every test length and append the rows."""
    for f in factors:
        tg = torch.Generator(device=dev).manual_seed(1000 * seed + 7 + f)
        acc = evaluate(model, f * L, batch=eval_batch, lag=lag, generator=tg)
        for key, val in (
            ("scheme", scheme),
            ("seed", seed),
            ("length", f * L),
            ("accuracy", acc),
            ("final_loss", final),
        ):
            rows[key].append(val)


def summarise(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    r"""Reduce :func:`run_grid`'s table over seeds.

    Returns
    -------
    dict
        ``schemes`` (in first-seen order), ``lengths`` (sorted), and ``mean``, ``std`` (sample standard
        deviation, ``ddof=1``; 0 for one seed), ``min``, ``max``, ``n`` of the accuracy, each of shape
        ``(schemes, lengths)``.

    Notes
    -----
    Chapters: notebooks/local-attention-extrapolation.md, notebooks/position-robustness.md.
    """
    for key in ("scheme", "length", "accuracy"):
        if key not in table:
            raise ValueError(f"table must have a column {key!r}")
    schemes = list(dict.fromkeys(table["scheme"].tolist()))
    lengths = np.unique(table["length"])
    shape = (len(schemes), len(lengths))
    out = {k: np.zeros(shape) for k in ("mean", "std", "min", "max", "n")}
    for i, s in enumerate(schemes):
        for j, n in enumerate(lengths):
            a = table["accuracy"][(table["scheme"] == s) & (table["length"] == n)]
            out["mean"][i, j], out["min"][i, j], out["max"][i, j] = a.mean(), a.min(), a.max()
            out["std"][i, j] = a.std(ddof=1) if a.size > 1 else 0.0
            out["n"][i, j] = a.size
    return {"schemes": np.asarray(schemes), "lengths": lengths, **out}


def format_table(summary: dict[str, np.ndarray]) -> str:
    """A Markdown table of :func:`summarise`'s result: ``mean ± std`` per scheme (rows) and length (columns).

    Notes
    -----
    Chapters: notebooks/local-attention-extrapolation.md, notebooks/position-robustness.md.
    """
    lengths = summary["lengths"]
    head = "| scheme | " + " | ".join(f"n = {int(n)}" for n in lengths) + " |"
    sep = "|---|" + "---|" * len(lengths)
    lines = [head, sep]
    for i, s in enumerate(summary["schemes"]):
        cells = [
            f"{summary['mean'][i, j]:.3f} ± {summary['std'][i, j]:.3f}" for j in range(len(lengths))
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
