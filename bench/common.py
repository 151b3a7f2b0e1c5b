"""What the timing benches share: the repository on the import path, and a loss criterion built as run.py builds it."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def criterion(loss: str):
    """The criterion of ``conf/loss/<loss>.yaml`` (its defaults: the YAML is their one source), as run.py builds it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return instantiate(compose("config", overrides=[f"loss={loss}"]).loss)
