r"""The self-orthogonality regulariser (chapter ``self-orthogonality``).

For a Gaussian (or any rotation-invariant) input :math:`x`, the signs of two projections agree with a
probability fixed by the angle :math:`\theta_{ij}` between the kernels:

.. math:: \vartheta_{ij} = \mathbb{E}_x\bigl[\operatorname{sgn}(x^\top
   w_i)\,\operatorname{sgn}(x^\top w_j)\bigr]
   = 1 - \frac{2\theta_{ij}}{\pi},

which vanishes exactly when :math:`w_i \perp w_j`. The regulariser of Zhang et al.
(arXiv:2001.01275)
estimates :math:`\vartheta_{ij}` from the layer's own batch, with :math:`\operatorname{sgn} \approx
\tanh(s\,\cdot)` so that it has a gradient, and penalises

.. math:: R = \lambda_1 \Bigl(\sum_{i \ne j} \vartheta_{ij}\Bigr)^2 + \lambda_2 \sum_{i \ne j}
   \vartheta_{ij}^2,
   \qquad \lambda_1 = 100,\ \lambda_2 = 1.

Kernels are the rows of ``weight`` (the layout of :class:`torch.nn.Linear`, ``(k, d)``); the inputs are
``x`` of shape ``(..., b, d)``. For a convolution, pass ``weight.flatten(1)`` and the unfolded patches
``F.unfold(x, kernel_size).transpose(1, 2)``.

Chapter: notebooks/self-orthogonality.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._numerics import max_abs, unit
from ._validation import check_compatible, check_device, check_float, check_int, check_tensor
from .seeding import make_generator
from .training import train

__all__ = [
    "SelfOrthogonality",
    "fit_teacher_student",
    "pairwise_angles",
    "self_orthogonality_loss",
    "sign_correlation",
]


def _check_weight(weight: torch.Tensor) -> torch.Tensor:
    return check_tensor(weight, "weight", min_dim=2, floating=True, finite=True)


def pairwise_angles(weight: torch.Tensor) -> torch.Tensor:
    r"""Angles :math:`\theta_{ij} \in [0, \pi]` between the rows of ``weight``.

    Uses :math:`\theta = 2\operatorname{atan2}(\lVert \hat w_i - \hat w_j\rVert, \lVert \hat w_i + \hat
    w_j\rVert)` on the unit rows :math:`\hat w`, which stays accurate for nearly parallel and nearly
    opposite rows (where :math:`\arccos` of the cosine loses half the digits).

    Parameters
    ----------
    weight : torch.Tensor, shape ``(..., k, d)``
        One kernel per row; no row may be zero.

    Returns
    -------
    torch.Tensor, shape ``(..., k, k)``
        Symmetric, zero on the diagonal.

    Raises
    ------
    ValueError
        If a row of ``weight`` is zero (its angle is undefined) or ``weight`` is not finite.

    Notes
    -----
    Chapter: notebooks/self-orthogonality.md.
    """
    _check_weight(weight)
    if weight.device.type != "meta" and weight.numel() and bool((weight == 0).all(dim=-1).any()):
        raise ValueError("weight has a zero row; the angle of a zero kernel is undefined")
    u = unit(
        weight
    )  # rescaled by the largest entry first: rows of norm 1e20 or 1e-30 work in float32
    diff = (u.unsqueeze(-2) - u.unsqueeze(-3)).norm(dim=-1)
    summ = (u.unsqueeze(-2) + u.unsqueeze(-3)).norm(dim=-1)
    return 2 * torch.atan2(diff, summ)


def _check_inputs(x: torch.Tensor, weight: torch.Tensor, sharpness: float) -> float:
    check_tensor(x, "x", min_dim=2, floating=True, finite=True)
    _check_weight(weight)
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(
            f"x and weight must share the input dimension (last axis), got {x.shape[-1]} and "
            f"{weight.shape[-1]}"
        )
    check_compatible(x, weight, "x", "weight", core_dims=2)
    if x.shape[-2] < 1:
        raise ValueError("x must hold at least one sample (axis -2)")
    return _check_sharpness(sharpness)


def _check_sharpness(sharpness: float) -> float:
    if isinstance(sharpness, bool) or not isinstance(sharpness, (int, float)):
        raise TypeError(
            f"sharpness must be a positive float (or math.inf), got {type(sharpness).__name__}"
        )
    if not sharpness > 0:  # also rejects NaN
        raise ValueError(f"sharpness must be > 0 (math.inf for the exact sign), got {sharpness}")
    return float(sharpness)


def sign_correlation(
    x: torch.Tensor, weight: torch.Tensor, *, sharpness: float = 10.0
) -> torch.Tensor:
    r"""Batch estimate
    of :math:`\vartheta_{ij} = \mathbb{E}[\operatorname{sgn}(x^\top w_i)\operatorname{sgn}(x^\top w_j)]`.

    With :math:`Y = X W^\top` (``(..., b, k)``), each column :math:`t_i = \tanh(s\,Y_{:,i})` is normalised to
    unit length along the batch and :math:`\vartheta = \hat T^\top \hat T`. For the exact sign
    (``sharpness=math.inf``, with :math:`\operatorname{sgn}(0) = -1`) every column has length
    :math:`\sqrt b` and this is the plain
    average :math:`\frac1b\sum_\alpha \operatorname{sgn}\operatorname{sgn}`,
    whose expectation is :math:`1 - 2\theta_{ij}/\pi` for rotation-invariant :math:`x`. For finite
    :math:`s` it is the cosine similarity of the tanh features: close to :math:`1 - 2\theta/\pi` when
    :math:`s\lVert w\rVert\sigma_x \gg 1` and close to :math:`\cos\theta` when it is :math:`\ll 1`; both
    vanish at :math:`\theta = \pi/2`.

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., b, d)``
        A batch of the layer's inputs.
    weight : torch.Tensor, shape ``(..., k, d)``
        The kernels (rows); leading dimensions broadcast against ``x``'s.
    sharpness : float
        :math:`s` in :math:`\operatorname{sgn}(y) \approx \tanh(s y)`; ``math.inf`` uses the exact sign
        (no gradient). The paper uses 10.

    Returns
    -------
    torch.Tensor, shape ``(..., k, k)``
        Symmetric with unit diagonal; a kernel whose tanh features are all zero (e.g. a zero kernel) gets
        a zero row and column instead of NaN.

    Notes
    -----
    Chapter: notebooks/self-orthogonality.md.
    """
    s = _check_inputs(x, weight, sharpness)
    # Y = (sx sw) Ys with Ys computed from rescaled inputs (|Ys| <= d), so that Y never overflows.
    sx, sw = max_abs(x, dim=(-2, -1)), max_abs(weight, dim=(-2, -1))
    ys = torch.matmul(x / sx, (weight / sw).transpose(-2, -1))
    if math.isinf(s):
        t = torch.where(ys > 0, torch.ones_like(ys), -torch.ones_like(ys))
    else:
        k = (s * sx.double() * sw.double()).clamp(max=torch.finfo(ys.dtype).max).to(ys.dtype)
        # tanh(k Ys) when k d <= 1e-4 is k Ys to within 4e-9 (relative): the column normalisation
        # below cancels k, so use Ys itself there instead of a product that underflows to 0.
        linear = k * x.shape[-1] <= 1e-4
        t = torch.where(linear, ys, torch.tanh(ys * k))
    t = F.normalize(t, dim=-2, eps=torch.finfo(t.dtype).tiny ** 0.5)
    return torch.matmul(t.transpose(-2, -1), t)


def self_orthogonality_loss(
    x: torch.Tensor,
    weight: torch.Tensor,
    *,
    lambda1: float = 100.0,
    lambda2: float = 1.0,
    sharpness: float = 10.0,
) -> torch.Tensor:
    r"""The self-orthogonality
    regulariser :math:`\lambda_1(\sum_{i\ne j}\vartheta_{ij})^2 + \lambda_2\sum_{i\ne j}\vartheta_{ij}^2`.

    :math:`\vartheta` is :func:`sign_correlation` of the batch ``x`` and the kernels ``weight``. The first
    term asks the *mean* normalised angle to be :math:`\pi/2`; the second asks every pair to be orthogonal.

    Parameters
    ----------
    x : torch.Tensor, shape ``(..., b, d)``
        A batch of the layer's inputs.
    weight : torch.Tensor, shape ``(..., k, d)``
        The kernels (rows).
    lambda1, lambda2 : float
        Non-negative weights (the paper: 100 and 1).
    sharpness : float
        :math:`s` in :math:`\tanh(s y)` (the paper: 10); ``math.inf`` for the exact sign.

    Returns
    -------
    torch.Tensor
        The regulariser, one value per leading index (a scalar for 2-D inputs).

    Notes
    -----
    Chapter: notebooks/self-orthogonality.md.
    """
    lambda1 = check_float(lambda1, "lambda1", low=0.0)
    lambda2 = check_float(lambda2, "lambda2", low=0.0)
    theta = sign_correlation(x, weight, sharpness=sharpness)
    k = theta.shape[-1]
    off = theta * (1 - torch.eye(k, dtype=theta.dtype, device=theta.device))
    total = off.sum(dim=(-2, -1))
    return lambda1 * total**2 + lambda2 * (off**2).sum(dim=(-2, -1))


class SelfOrthogonality(nn.Module):
    r"""The self-orthogonality regulariser as a module: ``reg(x, weight)`` returns :math:`R`.

    Add it to the task loss for each regularised layer, with the layer's input batch and its kernels, e.g.
    ``loss = task + reg(h, layer.weight)``; see :func:`self_orthogonality_loss` for the formula.

    Parameters
    ----------
    lambda1, lambda2 : float
        Weights of the squared sum and of the sum of squares of the
        off-diagonal :math:`\vartheta_{ij}`.
    sharpness : float
        :math:`s` in :math:`\operatorname{sgn} \approx \tanh(s\,\cdot)`.

    Notes
    -----
    Chapter: notebooks/self-orthogonality.md.
    """

    def __init__(
        self, lambda1: float = 100.0, lambda2: float = 1.0, sharpness: float = 10.0
    ) -> None:
        super().__init__()
        self.lambda1 = check_float(lambda1, "lambda1", low=0.0)
        self.lambda2 = check_float(lambda2, "lambda2", low=0.0)
        self.sharpness = _check_sharpness(sharpness)

    def forward(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Return the regulariser for the input batch ``x`` ``(..., b, d)`` and kernels ``weight`` ``(..., k, d)``."""
        return self_orthogonality_loss(
            x, weight, lambda1=self.lambda1, lambda2=self.lambda2, sharpness=self.sharpness
        )

    def extra_repr(self) -> str:
        """The hyper-parameters, shown in the module's ``repr``."""
        return f"lambda1={self.lambda1:g}, lambda2={self.lambda2:g}, sharpness={self.sharpness:g}"


def fit_teacher_student(
    lambdas: tuple[float, float] | None,
    *,
    d: int,
    k: int,
    r: int,
    steps: int,
    batch: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    lr: float = 1e-2,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    r"""Train a two-layer ReLU student on a random teacher, optionally with the self-orthogonality regulariser.

    The teacher is :math:`y = \sum_{j=1}^{r} \operatorname{relu}(u_j^\top x)` with random unit vectors
    :math:`u_j \in \mathbb{R}^d`; the student is ``Linear(d, k) -> ReLU -> Linear(k, 1)`` trained by Adam on
    fresh Gaussian batches, with :class:`SelfOrthogonality` ``(*lambdas)`` on its first layer (no regulariser
    when ``lambdas`` is ``None``).

    Parameters
    ----------
    lambdas : tuple of two floats, or None
        :math:`(\lambda_1, \lambda_2)` of the regulariser.
    d, k, r : int
        Input dimension, student width (number of kernels), teacher width.
    steps, batch : int
        Adam steps and batch size.
    seed : int
        Seeds the teacher, the data and the student's initialisation (through a local
        :class:`torch.Generator`: torch's global random state is left untouched).
    device : torch.device or str
        Where to train.
    lr : float
        Adam's learning rate.

    Returns
    -------
    tuple
        ``(angles_at_init, angles_after, relative_test_mse)``: the :func:`pairwise_angles` of the first
        layer's kernels before and after training, and the test MSE divided by the target's variance.

    Notes
    -----
    Chapter: notebooks/self-orthogonality.md.
    """
    d, k, r = (check_int(v, name, low=1) for v, name in ((d, "d"), (k, "k"), (r, "r")))
    steps, batch = check_int(steps, "steps", low=0), check_int(batch, "batch", low=1)
    lr = check_float(lr, "lr", low=0, low_open=True)
    if lambdas is not None and (not isinstance(lambdas, (tuple, list)) or len(lambdas) != 2):
        raise TypeError(f"lambdas must be None or a pair (lambda1, lambda2), got {lambdas!r}")
    device = check_device(device, allow_none=False)
    g = make_generator(seed, device)
    teacher = F.normalize(torch.randn(r, d, generator=g, device=device), dim=-1)
    # The student's default initialisation draws from torch's global generator: seed it inside a
    # fork so
    # that the caller's global random state is left as it was.
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(d, k), nn.ReLU(), nn.Linear(k, 1)).to(device)
    init = pairwise_angles(net[0].weight.detach())
    reg = SelfOrthogonality(*lambdas) if lambdas is not None else None

    def objective(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
        loss = (model(xb) - torch.relu(xb @ teacher.T).sum(-1, keepdim=True)).pow(2).mean()
        return loss if reg is None else loss + reg(xb, model[0].weight)

    train(
        net, lambda: torch.randn(batch, d, generator=g, device=device), steps, loss=objective, lr=lr
    )
    xt = torch.randn(8192, d, generator=g, device=device)
    yt = torch.relu(xt @ teacher.T).sum(-1, keepdim=True)
    with torch.no_grad():
        rel_mse = ((net(xt) - yt).pow(2).mean() / yt.var()).item()
    return init, pairwise_angles(net[0].weight.detach()), rel_mse
