"""`Pipeline`: the loaded ACE-Step 1.5 models and `generate(request) -> GenerationOutput`.

Steps of one generation: (LM plan) -> task conditioning (`engine.tasks`) -> tokenise and encode
caption/lyrics -> condition encoder + context latents -> sampler (`engine.samplers`) with a
cross-attention cache per conditioning -> VAE decode -> peak clamp, task post-processing,
-1 dBFS normalisation. Models stay loaded between calls; `load_dit` swaps only the DiT.
"""

from __future__ import annotations

import random
import time
import warnings
import weakref
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine import checkpoints
from engine.models.acestep import (BUCKET_FRAMES, AceStepConditionGenerationModel, DiTLoop, bucket_frames,
                                   resolve_compile, warm_up)
from engine.models.text_encoder import (CAPTION_MAX_TOKENS, LYRIC_MAX_TOKENS, TextEncoder, TokenBatch,
                                        pad_or_truncate)
from engine.lora import LoraSet
from engine.models.vae import SAMPLE_RATE, VAE
from engine.request import GenerationRequest
from engine.samplers import (DCWSettings, SamplerSettings, base_timesteps, sample, turbo_timesteps)
from engine.tasks import Conditioning, build_conditioning
from engine.types import CheckpointError, EngineError, GenerationOutput, ProgressEvent
from engine.vram import Offloaded, VramPlan, module_bytes, plan_vram
from engine.units import FRAMES_PER_S

DEFAULT_DIT = "acestep-v15-turbo"
DEFAULT_TURBO_STEPS = 8
DEFAULT_BASE_STEPS = 50
WARM_UP_S = (20.0, 30.0)  # request lengths compiled at start: the bridge's repaint window, a 30 s song
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}

ProgressFn = Callable[[ProgressEvent], None] | None
CancelFn = Callable[[], bool] | None


def resolve_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """None -> cuda if available else cpu; bf16 on cuda, fp32 on cpu."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineError("device: CUDA was requested but torch sees no CUDA device")
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        if dtype not in DTYPES:
            raise EngineError(f"dtype: '{dtype}' is not one of float32, bfloat16, float16")
        dtype = DTYPES[dtype]
    return device, dtype


class _Denoiser:
    """The sampler's model call: DiT velocity with one cross-attention K/V cache per conditioning.

    `prepare` gives the sampler the fast loop (`DiTLoop`: set-up once per schedule and length,
    optionally compiled); calling the object directly is the one-shot path.
    """

    def __init__(self, dit: AceStepConditionGenerationModel, phases: list[tuple[torch.Tensor, torch.Tensor]],
                 cfg: bool, compile: bool = False, bucket: int | None = None):
        self.dit = dit
        self.phases = phases  # [(encoder_hidden_states, context_latents)] per phase
        self.cfg = cfg
        self.compile = compile
        self.bucket = bucket
        self._cache: dict[int, tuple[list, torch.Tensor]] = {}

    def _prepared(self, phase: int):
        if phase not in self._cache:
            enc, ctx = self.phases[phase]
            if self.cfg:
                enc = torch.cat([enc, self.dit.null_condition_emb.expand_as(enc)])
                ctx = torch.cat([ctx, ctx])
            self._cache[phase] = (self.dit.decoder.cross_attention_cache(enc), ctx)
        return self._cache[phase]

    def prepare(self, timesteps: torch.Tensor) -> DiTLoop:
        frames = self.phases[0][1].shape[1]
        return DiTLoop(self.dit.decoder, timesteps, frames, self._prepared, self.compile, self.bucket)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, phase: int) -> torch.Tensor:
        kv, ctx = self._prepared(phase)
        return self.dit.decoder(x, t, ctx, kv)


class Pipeline:
    def __init__(self, root: Path, dit: AceStepConditionGenerationModel, dit_name: str, text_encoder: TextEncoder,
                 vae: VAE, device: torch.device, dtype: torch.dtype):
        self.root = root
        self.dit = dit
        self.dit_name = dit_name
        self.text_encoder = text_encoder
        self.vae = vae
        self.device = device
        self.dtype = dtype
        self.lm = None
        self.lm_name: str | None = None
        self.loras = LoraSet(root)  # adapters under root/loras, applied per job
        self.low_vram: bool | None = None  # True/False forces offloading on/off; None = by GPU size
        self.vram = VramPlan(False, "not planned yet")
        # Repaint regions must last 3..90 s; parity fixtures (a 2.3 s region) switch this off.
        self.enforce_region_limits = True
        self.compile_dit = False  # torch.compile the DiT step (`--compile`); see `set_compile`
        self._compiled_decoder = None  # weak reference to the DiT that `set_compile` compiled

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoints(cls, root, dit: str = DEFAULT_DIT, lm: str | None = None, device=None,
                         dtype=None, compile: str | bool = "off", low_vram: bool | None = None,
                         warm_up_s: tuple[float, ...] = WARM_UP_S) -> "Pipeline":
        """Load text encoder, VAE and DiT. `compile`: auto|on|off (auto = on for CUDA), with a warm-up
        for `warm_up_s` request lengths; `low_vram`: True/False forces offloading between stages on/off,
        None decides by the GPU's size (see `plan_vram`)."""
        root = checkpoints.resolve_root(root)
        if not root.is_dir():
            raise CheckpointError(f"{root}: checkpoints folder not found; run `ace-companion download` "
                                  f"or pass --checkpoints DIR")
        device, dtype = resolve_device_dtype(device, dtype)
        text_encoder = TextEncoder.from_folder(root / checkpoints.TEXT_ENCODER_DIR, device, dtype)
        vae = VAE.from_folder(root / checkpoints.VAE_DIR, device, dtype)
        model = AceStepConditionGenerationModel.from_folder(root / dit, device, dtype)
        pipeline = cls(root, model, dit, text_encoder, vae, device, dtype)
        pipeline.low_vram = low_vram
        pipeline.plan_vram()
        pipeline.set_compile(compile, warm_up_s)
        if lm is not None:
            pipeline.load_lm(lm)
        return pipeline

    def plan_vram(self) -> VramPlan:
        """Keep the text encoder, VAE and LM on the CPU between their stages when the GPU is too
        small for everything (or `low_vram`); see engine/vram.py."""
        parts = [self.text_encoder, self.vae, self.lm]
        owners = [part.wrapped if isinstance(part, Offloaded) else part for part in parts]
        modules = [getattr(self.text_encoder, "model", None), getattr(self.vae, "model", None),
                   getattr(getattr(self.lm, "lm", None), "model", None)]
        self.vram = plan_vram(self.device, self.low_vram,
                              module_bytes(self.dit) + sum(module_bytes(m) for m in modules))
        wrapped = [Offloaded(owner, module, self.device) if self.vram.offload and owner is not None else owner
                   for owner, module in zip(owners, modules)]
        if not self.vram.offload:
            for owner, module in zip(owners, modules):
                if module is not None:
                    module.to(self.device)
        self.text_encoder, self.vae, self.lm = wrapped
        return self.vram

    def set_compile(self, choice: str | bool, warm_up_s: tuple[float, ...] = WARM_UP_S) -> None:
        """`--compile auto|on|off`: compile the loaded DiT's step and warm it up for `warm_up_s` durations
        now. Only this DiT runs compiled; one that a request names later (e.g. base for stems) runs
        eager rather than make that request wait for a compilation."""
        try:
            self.compile_dit = resolve_compile(choice, self.device)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        self._compiled_decoder = weakref.ref(self.dit.decoder) if self.compile_dit else None
        frames = sorted({bucket_frames(int(seconds * FRAMES_PER_S), BUCKET_FRAMES) for seconds in warm_up_s})
        try:
            warm_up(self.dit.decoder, frames, self.compile_dit)
        except Exception as exc:  # compiler back ends fail in many ways (no C compiler, no triton, ...)
            problem = f"compiling the DiT step failed ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})"
            if choice in ("on", True):
                raise EngineError(f"--compile on: {problem}") from None
            warnings.warn(f"--compile auto: {problem}; the DiT runs eager")
            self.compile_dit, self._compiled_decoder = False, None

    def load_dit(self, name: str) -> None:
        """Switch the DiT to checkpoint folder `name` (text encoder and VAE stay loaded)."""
        if name == self.dit_name:
            return
        if "/" in name or "\\" in name or name.startswith("."):
            raise EngineError(f"dit: '{name}' must be a checkpoint folder name such as {DEFAULT_DIT}")
        checkpoints.validate_folder(self.root / name, "dit")
        old = self.dit
        if self.device.type == "cuda":  # park the old DiT in CPU memory so two never share the GPU
            old.to("cpu")
            torch.cuda.empty_cache()
        try:
            model = AceStepConditionGenerationModel.from_folder(self.root / name, self.device, self.dtype)
        except BaseException:
            old.to(self.device)
            raise
        del old
        self.dit, self.dit_name = model, name
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.plan_vram()

    def load_lm(self, name: str | None) -> None:
        """Load the 5 Hz LM planner ("0.6B"/"1.7B"/"4B"/folder name) or unload it (None)."""
        if name is None:
            self.lm, self.lm_name = None, None
            self.plan_vram()
            return
        from engine.lm.planner import Planner

        folder = checkpoints.lm_folder_name(name)
        if folder == self.lm_name:
            return
        self.lm = Planner(self.root / folder, device=str(self.device), dtype=self.dtype)
        self.lm_name = folder
        self.plan_vram()

    def info(self) -> dict:
        lora = self.loras.status()
        return {"dit": self.dit_name, "lm": self.lm_name, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "checkpoints": str(self.root),
                "lora": {"default": lora["default"], "enabled": lora["enabled"], "scale": lora["scale"],
                         "loaded": lora["loaded"], "last_used": lora["last_used"]},
                "vram": self.vram.to_dict()}

    @property
    def silence_latent(self) -> torch.Tensor:
        return self.dit.silence_latent

    @property
    def is_turbo(self) -> bool:
        return bool(self.dit.config.is_turbo)

    # ------------------------------------------------------------------ generation
    def _plan_with_lm(self, request: GenerationRequest, progress: ProgressFn, cancel: CancelFn):
        """Fill in metas/caption (and codes) with the 5 Hz LM. Returns (request, plan)."""
        if self.lm is None:
            raise EngineError("thinking needs an LM: start the engine with --lm (e.g. --lm 0.6B)")
        from engine.lm.planner import apply_plan

        plan = self.lm.plan(request, progress=progress, cancel=cancel)
        return apply_plan(request, plan), plan

    def sampler_settings(self, request: GenerationRequest) -> SamplerSettings:
        """Schedule, guidance and DCW for a request on the loaded DiT."""
        return sampler_settings_for(request, self.is_turbo)

    def _tokens(self, prompts: list[str], max_length: int) -> TokenBatch:
        return self.text_encoder.tokenize(prompts, max_length)

    def _noise(self, seeds: list[int], frames: int) -> torch.Tensor:
        channels = self.dit.config.audio_acoustic_hidden_dim
        draws = [torch.randn((1, frames, channels), generator=torch.Generator(self.device).manual_seed(seed),
                             device=self.device, dtype=self.dtype) for seed in seeds]
        return torch.cat(draws)

    def generate(self, request: GenerationRequest, progress: ProgressFn = None, cancel: CancelFn = None,
                 dump: bool = False) -> GenerationOutput:
        emit = progress or (lambda event: None)
        timings: dict[str, float] = {}
        request.validate()
        if request.dit and request.dit != self.dit_name:
            emit(ProgressEvent("load", 0, 1, f"loading DiT {request.dit}"))
            started = time.perf_counter()
            self.load_dit(request.dit)
            timings["load"] = time.perf_counter() - started
        lora_name, lora_scale = self.loras.activate(self.dit.decoder, request.lora, request.lora_scale)
        lm_plan = None
        # Upstream plans whenever an LM is loaded and thinking or a use_cot_* flag asks for it
        # (never for cover / repaint / extract).
        from engine.lm.planner import Planner

        if Planner.should_plan(request) and (request.thinking or self.lm is not None):
            request, lm_plan = self._plan_with_lm(request, progress, cancel)

        batch = request.batch_size
        seeds = request.item_seeds() or [random.SystemRandom().randint(0, 2 ** 32 - 1) for _ in range(batch)]
        with torch.no_grad():
            cond = build_conditioning(self, request, batch, progress, cancel)
            out = self._run(request, cond, seeds, emit, cancel, dump, timings)
        audio_items, dumped = out
        if dump and lm_plan is not None:
            dumped.update(lm_plan.dump_tensors())
        return GenerationOutput(
            audio=audio_items, sample_rate=SAMPLE_RATE, seeds=seeds, request=request.to_dict(),
            timings=timings, lm_plan=lm_plan.to_dict() if lm_plan else None, dump=dumped if dump else None,
            models={"dit": self.dit_name, "lm": self.lm_name or "", "lora": lora_name or "",
                    "lora_scale": lora_scale if lora_name else None},
        )

    def _run(self, request: GenerationRequest, cond: Conditioning, seeds: list[int], emit, cancel, dump: bool,
             timings: dict):
        trace: dict = {}
        started = time.perf_counter()
        emit(ProgressEvent("encode_text", 0, 1, "encoding caption and lyrics"))
        text = self._tokens(cond.caption_prompts, CAPTION_MAX_TOKENS)
        lyrics = self._tokens(cond.lyric_prompts, LYRIC_MAX_TOKENS)
        text_hidden = self.text_encoder.encode_captions(text.ids).to(self.dtype)
        lyric_hidden = self.text_encoder.embed_lyrics(lyrics.ids).to(self.dtype)
        enc, enc_mask = self.dit.encode_conditions(text_hidden, text.mask, lyric_hidden, lyrics.mask,
                                                   cond.refer_packed.to(self.dtype), cond.refer_order_mask)
        context = self.dit.context_latents(cond.src_latents.to(self.dtype), cond.chunk_masks, cond.is_covers,
                                           cond.lm_hints)
        settings = self.sampler_settings(request)
        settings.repaint = cond.repaint
        phases = [(enc, context)]
        if cond.non_cover_caption_prompts is not None and cond.cover_strength < 1.0:
            nc_text = pad_or_truncate(self._tokens(cond.non_cover_caption_prompts, CAPTION_MAX_TOKENS),
                                      text.ids.shape[1], self.text_encoder.pad_id)
            nc_hidden = self.text_encoder.encode_captions(nc_text.ids).to(self.dtype)
            nc_enc, nc_mask = self.dit.encode_conditions(nc_hidden, nc_text.mask, lyric_hidden, lyrics.mask,
                                                         cond.refer_packed.to(self.dtype), cond.refer_order_mask)
            silence_src = self.silence_latent[:, :cond.frames].expand(len(seeds), -1, -1).to(self.dtype)
            nc_context = self.dit.context_latents(silence_src, cond.chunk_masks,
                                                  torch.zeros_like(cond.is_covers))
            phases.append((nc_enc, nc_context))
            settings.switch_step = int(sampler_steps(settings) * cond.cover_strength)
            trace.update(non_cover_text_token_ids=nc_text.ids, non_cover_text_attention_mask=nc_text.mask,
                         non_cover_text_hidden_states=nc_hidden, encoder_hidden_states_non_cover=nc_enc,
                         encoder_attention_mask_non_cover=nc_mask, context_latents_non_cover=nc_context)
        timings["encode_text"] = time.perf_counter() - started

        started = time.perf_counter()
        noise = self._noise(seeds, cond.frames)
        if dump:
            settings.trace = trace
        compiled = self.compile_dit and self._compiled_decoder() is self.dit.decoder
        denoiser = _Denoiser(self.dit, phases, settings.guidance_scale > 1.0, compiled)
        latents = sample(denoiser, noise, settings, progress=emit, cancel=cancel)
        timings["diffusion"] = time.perf_counter() - started
        if not torch.isfinite(latents).all():
            raise EngineError("the sampler produced NaN/Inf latents (try float32 or another seed)")

        started = time.perf_counter()
        emit(ProgressEvent("decode", 0, 1, "decoding audio"))
        wave = self.vae.decode(latents, tiled=request.use_tiled_decode).float()
        timings["decode"] = time.perf_counter() - started

        emit(ProgressEvent("postprocess", 0, 1, "normalising"))
        wave = postprocess_audio(wave, cond.wave_postprocess, request.enable_normalization,
                                 request.normalization_db)
        audio_items = [item.cpu().numpy().astype(np.float32) for item in wave]

        dumped = None
        if dump:
            dumped = {
                "text_token_ids": text.ids, "text_attention_mask": text.mask,
                "lyric_token_ids": lyrics.ids, "lyric_attention_mask": lyrics.mask,
                "text_hidden_states": text_hidden, "lyric_hidden_states": lyric_hidden,
                "refer_audio_order_mask": cond.refer_order_mask,
                "src_latents": cond.src_latents, "chunk_masks": cond.chunk_masks, "is_covers": cond.is_covers,
                "encoder_hidden_states": enc, "encoder_attention_mask": enc_mask, "context_latents": context,
                "noise": noise, "pred_latents": latents,
                "audio": wave[0] if wave.shape[0] == 1 else wave,
                **trace, **cond.dump,
            }
            dumped = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu())
                      for k, v in dumped.items() if isinstance(v, torch.Tensor)}
        return audio_items, dumped


def sampler_settings_for(request: GenerationRequest, is_turbo: bool) -> SamplerSettings:
    """Turbo: formula schedule, no CFG, DCW on by default. Base/SFT: linspace schedule, CFG, DCW off."""
    if is_turbo:
        steps = request.inference_steps or DEFAULT_TURBO_STEPS
        timesteps, guidance = turbo_timesteps(request.shift, steps), 1.0
    else:
        steps = request.inference_steps or DEFAULT_BASE_STEPS
        timesteps, guidance = base_timesteps(request.shift, steps), request.guidance_scale
    dcw_on = is_turbo if request.dcw_enabled is None else request.dcw_enabled
    dcw = DCWSettings(request.dcw_mode, request.dcw_scaler, request.dcw_high_scaler) if dcw_on else None
    return SamplerSettings(timesteps=timesteps, guidance_scale=guidance, use_adg=request.use_adg,
                           cfg_interval_start=request.cfg_interval_start,
                           cfg_interval_end=request.cfg_interval_end, dcw=dcw)


def sampler_steps(settings: SamplerSettings) -> int:
    """Number of sampler steps (DiT calls) a settings object will run."""
    timesteps = settings.timesteps
    return len(timesteps) - 1 if float(timesteps[-1]) == 0.0 else len(timesteps)


def postprocess_audio(wave: torch.Tensor, hook=None, normalize: bool = True, target_db: float = -1.0) -> torch.Tensor:
    """[B, 2, N]: divide an item by its peak when it exceeds 1, apply `hook`, then peak-normalise."""
    peaks = wave.abs().amax(dim=(1, 2), keepdim=True)
    wave = torch.where(peaks > 1.0, wave / peaks, wave)
    if hook is not None:
        wave = hook(wave)
    if normalize:
        peaks = wave.abs().amax(dim=(1, 2), keepdim=True)
        gain = (10.0 ** (target_db / 20.0)) / peaks.clamp_min(1e-12)
        wave = torch.where(peaks >= 1e-6, wave * gain, wave)
    return wave
