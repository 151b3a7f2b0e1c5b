"""MetaPruning's PruningNets (weights generated per channel encoding) and the narrow networks they stand for.

    net = build_pruningnet("mobilenetv2", size="small", num_classes=10, in_channels=1)
    net.set_encoding(encoding); logits = net(x)           # the PruningNet at one channel configuration
    narrow = net.narrow(encoding)                         # the ordinary narrow network of the same encoding
    narrow = build_pruned("top_encodings.yaml")           # the same, from the search's YAML file
"""
from pathlib import Path

import yaml

from netcompress.core import ConfigError
from netcompress.networks.pruningnet import mobilenetv1, mobilenetv2, resnet
from netcompress.networks.pruningnet.meta import (
    MAX_CHOICE,
    NUM_CHOICES,
    RATIOS,
    PruningNet,
    official_weight_decay,
    width,
)

ARCHS = {
    "mobilenetv2": (mobilenetv2.MobileNetV2PruningNet, mobilenetv2),
    "mobilenetv1": (mobilenetv1.MobileNetV1PruningNet, mobilenetv1),
    "resnet": (resnet.ResNetPruningNet, resnet),
}
SIZES = ("imagenet", "small")


def _arch_kwargs(arch: str, size: str, key: str) -> dict:
    if arch not in ARCHS:
        raise ConfigError(f"{key}.arch={arch!r}: unknown PruningNet architecture; choose one of {sorted(ARCHS)}.")
    if size not in SIZES:
        raise ConfigError(f"{key}.size={size!r}: choose 'imagenet' (224x224 inputs, official widths) or 'small' "
                          f"(32x32 inputs such as digits or CIFAR).")
    return dict(getattr(ARCHS[arch][1], size.upper()))


def build_pruningnet(arch: str = "mobilenetv2", size: str = "small", num_classes: int = 10, in_channels: int = 3,
                     **overrides) -> PruningNet:
    """A PruningNet of the official ImageNet design (``size=imagenet``) or its 32x32 variant (``size=small``)."""
    kwargs = _arch_kwargs(arch, size, "model") | overrides
    return ARCHS[arch][0](num_classes=num_classes, in_channels=in_channels, **kwargs)


def narrow_network(arch: str, arch_kwargs: dict, encoding, **options):
    """The ordinary narrow network of ``encoding`` in the space ``arch``/``arch_kwargs`` (as saved by the search)."""
    cls = ARCHS[arch][0].narrow_cls
    return cls([int(c) for c in encoding], **arch_kwargs, **options)


def load_encoding_file(path) -> dict:
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise ConfigError(f"model.encoding={path}: file not found. Point it at the top-encodings YAML the search "
                          f"stage wrote (<search run dir>/top_encodings.yaml).")
    try:
        content = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        content = e
    if not isinstance(content, dict) or not ({"top", "encoding"} & content.keys()):
        raise ConfigError(f"model.encoding={path}: not an encoding file (the search's top_encodings.yaml with a "
                          f"'top' list, or a hand-written one with 'arch', 'size' and 'encoding'). Point it at "
                          f"<search run dir>/top_encodings.yaml.")
    return content


def build_pruned(encoding: str, pick="best", num_classes: int | None = None, in_channels: int | None = None,
                 **options):
    """The narrow network described by an encoding YAML file.

    The file is the search's ``top_encodings.yaml`` (``arch``, ``arch_kwargs``, a ranked ``top`` list and the
    ``uniform`` baseline and ``random`` encodings of the same budget) or a hand-written one (``arch``, ``size``,
    ``encoding``). ``pick`` selects ``best`` (= 0), an index into ``top``, ``uniform``, or ``random`` /
    ``random<i>`` (the i-th random encoding of the budget, unselected by the search).
    ``num_classes``/``in_channels`` override the saved ones. The network's ``search_score`` is the held-out score
    the search gave the picked encoding (None for a hand-written one).
    """
    spec = load_encoding_file(encoding)
    arch = spec.get("arch")
    kwargs = dict(spec["arch_kwargs"]) if "arch_kwargs" in spec else _arch_kwargs(arch, spec.get("size", "small"),
                                                                                   "model.encoding")
    if arch not in ARCHS:
        raise ConfigError(f"model.encoding={encoding}: 'arch' must be one of {sorted(ARCHS)}, got {arch!r}.")
    if "encoding" in spec:
        picked = spec
    elif pick == "uniform":
        picked = spec["uniform"]
    elif str(pick).startswith("random"):
        index = int(str(pick)[6:] or 0)
        if not 0 <= index < len(spec.get("random", [])):
            raise ConfigError(f"model.pick={pick}: {encoding} holds {len(spec.get('random', []))} random encodings; "
                              f"pick random (= random0) .. random{len(spec.get('random', [])) - 1}.")
        picked = spec["random"][index]
    else:
        index = 0 if pick == "best" else int(pick)
        if not 0 <= index < len(spec.get("top", [])):
            raise ConfigError(f"model.pick={pick}: {encoding} holds {len(spec.get('top', []))} encodings; pick "
                              f"'best', 'uniform' or an index below that.")
        picked = spec["top"][index]
    kwargs.update({k: v for k, v in (("num_classes", num_classes), ("in_channels", in_channels)) if v is not None})
    net = narrow_network(arch, kwargs, picked["encoding"], **options)
    net.search_score = picked.get("val_acc")
    return net


__all__ = ["RATIOS", "NUM_CHOICES", "MAX_CHOICE", "width", "PruningNet", "ARCHS", "build_pruningnet",
           "narrow_network", "build_pruned", "load_encoding_file", "official_weight_decay"]
