"""Session-wide test fixtures.

Loading the models and running the tiny VAE's encoder are the suite's costs (the encoder keeps 128
channels at 48 kHz, about a second of CPU per second of audio). So every VAE of the session
remembers what it has encoded (`remembering_vae_encoders`), one pipeline on the parity checkpoints
serves the whole session (`shared_pipeline`), and one engine over HTTP on that pipeline serves
every flow that needs a real engine (`shared_engine`). Tests get them through `pipeline` and
`engine`, which put the pipeline back as they found it (DiT, LM, switches) when the test ends.
"""

import contextlib
import hashlib
import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DATA = Path(__file__).parent / "data"
PARITY = DATA / "parity"
PARITY_LM = DATA / "parity-lm"
TURBO = "acestep-v15-turbo"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY


@pytest.fixture(scope="session")
def parity_checkpoints() -> Path:
    return PARITY / "checkpoints"


@pytest.fixture(scope="session")
def parity_lm_dir() -> Path:
    return PARITY_LM


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Path:
    """`make-tiny-checkpoints` output (seed 0, every published DiT, VAE, text encoder), made once.
    Tests read it; a test that needs a changed copy makes its own."""
    from engine.commands.tiny import make_tiny_checkpoints

    root = tmp_path_factory.mktemp("tiny")
    make_tiny_checkpoints(root, seed=0, log=lambda message: None)
    return root


@pytest.fixture(scope="session")
def tiny_lm_checkpoints(tmp_path_factory) -> Path:
    """A checkpoints folder holding only a tiny random 0.6B-layout LM (seed 3), made once."""
    from engine.lm.tiny import make_tiny_lm

    root = tmp_path_factory.mktemp("tiny_lm")
    make_tiny_lm(root / "acestep-5Hz-lm-0.6B", seed=3)
    return root


# ----------------------------------------------------------------------------- one encoder pass
class EncoderMemo:
    """Wraps a `VAE`'s single-window encode so each distinct window runs through the network once.

    The key is the window's exact samples (shape, dtype and a hash of the bytes), so a window is
    reused only when it is bit-identical; tiling, padding, the engine's source cache and everything
    above still run every time. `latents` is shared by every VAE with the same weights, device
    and dtype: the parity cases (2B and XL share the VAE), the task tests, the flows and the CLI
    tests encode the same source and timbre montage again and again (the montage never goes
    through the source cache); this keeps that to one encoder pass per distinct window.
    """

    def __init__(self, vae, latents: dict):
        self._encode_once = vae._encode_once
        self._latents = latents
        vae._encode_once = self

    def __call__(self, wave):
        data = wave.detach().to("cpu").contiguous().numpy().tobytes()
        key = (tuple(wave.shape), str(wave.dtype), str(wave.device), hashlib.blake2b(data, digest_size=20).digest())
        if key not in self._latents:
            self._latents[key] = self._encode_once(wave)
        return self._latents[key].clone()


def _weights_key(vae) -> tuple:
    digest = hashlib.blake2b(digest_size=20)
    for name, tensor in vae.model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.digest(), str(vae.device), str(vae.dtype)


@pytest.fixture(scope="session", autouse=True)
def remembering_vae_encoders():
    """Every `VAE.from_folder` of the session (pipelines, the render CLI in-process, VAE tests)
    gets an `EncoderMemo` shared with the other VAEs of the same weights."""
    from engine.models.vae import VAE

    original = VAE.__dict__["from_folder"]
    memos: dict[tuple, dict] = {}

    def from_folder(cls, *args, **kwargs):
        vae = original.__func__(cls, *args, **kwargs)
        EncoderMemo(vae, memos.setdefault(_weights_key(vae), {}))
        return vae

    VAE.from_folder = classmethod(from_folder)
    yield
    VAE.from_folder = original


# ----------------------------------------------------------------------------- one pipeline
@contextlib.contextmanager
def restored(pipeline):
    """Put back the pipeline's DiT (active and default), LM, region-limit and fast-path switches
    when the block ends. Its caches stay: sharing them is the point."""
    dit, default, lm = pipeline.dit_name, pipeline.default_dit, pipeline.lm_name
    limits, fast_path = pipeline.enforce_region_limits, pipeline.fast_path
    try:
        yield pipeline
    finally:
        pipeline.enforce_region_limits, pipeline.fast_path = limits, fast_path
        if pipeline.lm_name != lm:
            pipeline.load_lm(lm)
        if pipeline.default_dit != default:
            pipeline.load_dit(default)
        if pipeline.dit_name != dit:
            pipeline.load_dit(dit, default=False)


@contextlib.contextmanager
def region_limits_off(pipeline):
    """Let a repaint region be shorter than 3 s (parity fixtures use 2.3 s) inside the block only."""
    with restored(pipeline):
        pipeline.enforce_region_limits = False
        yield pipeline


@pytest.fixture(scope="session")
def shared_pipeline(remembering_vae_encoders):
    """The turbo pipeline on the parity checkpoints (fp32 CPU); the base DiT loads when a request
    asks for it. Tests use `pipeline` (or `engine`), which restore its state."""
    import torch

    from engine.pipeline import Pipeline

    return Pipeline.from_checkpoints(PARITY / "checkpoints", dit=TURBO, device="cpu", dtype=torch.float32)


@pytest.fixture
def pipeline(shared_pipeline):
    """The session pipeline (turbo, region limits on, no LM), restored after the test."""
    with restored(shared_pipeline):
        yield shared_pipeline


# ----------------------------------------------------------------------------- one engine
@pytest.fixture(scope="session")
def shared_engine(shared_pipeline, tmp_path_factory):
    """The engine HTTP service (EngineService + FastAPI + uvicorn) on loopback, in this process,
    over the session pipeline. Tests that are about the engine process itself start their own."""
    from engine.service.threaded import InProcessEngine

    server = InProcessEngine(tmp_path_factory.mktemp("engine-results"), shared_pipeline).start()
    yield server
    server.stop()


@pytest.fixture
def engine(shared_engine):
    """The session engine; its pipeline is put back as it was (DiT, LM, limits) after the test."""
    with restored(shared_engine.pipeline):
        yield shared_engine
