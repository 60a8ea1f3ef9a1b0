"""`Pipeline`: the loaded ACE-Step 1.5 models and `generate(request) -> GenerationOutput`.

Steps of one generation: (LM plan) -> task conditioning (`engine.tasks`, through a `TaskContext`)
-> encode each conditioning phase (caption/lyrics/timbre, condition encoder, context latents) ->
sampler (`engine.samplers`) with a cross-attention cache per phase -> VAE decode -> peak clamp,
repaint splice, -1 dBFS normalisation -> optional cut/resample (`output_region`,
`output_sample_rate`).

The fast path (`fast_path`, on by default) keeps what it computed: source latents by content
(`engine.sources`), text-side encodings by prompt, and decodes only a repaint's region plus the
decoder's receptive field (`engine.vae_span`). Every run reports its `work` (frames encoded and
decoded, DiT tokens and steps, cache outcomes). Models stay loaded between calls; a request
without `dit` runs on `default_dit`.
"""

from __future__ import annotations

import random
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine import checkpoints
from engine.devices import resolve_device_dtype
from engine.lora import LoraSet
from engine.models.acestep import (
    BUCKET_FRAMES,
    AceStepConditionGenerationModel,
    DiTLoop,
    bucket_frames,
    resolve_compile,
    warm_up,
)
from engine.models.text_encoder import CAPTION_MAX_TOKENS, LYRIC_MAX_TOKENS, TextEncoder, TokenBatch, pad_or_truncate
from engine.models.vae import VAE
from engine.regions import splice_waveform
from engine.request import GenerationRequest
from engine.samplers import DCWSettings, SamplerSettings, base_timesteps, sample, turbo_timesteps
from engine.sources import LRU, EncodeReport, SourceCache
from engine.tasks import Conditioning, TaskContext, build_conditioning
from engine.types import Cancelled, CheckpointError, EngineError, GenerationOutput, ProgressEvent
from engine.units import FRAMES_PER_S, HOP_SAMPLES, SAMPLE_RATE
from engine.vae_span import decode_span, encode_span, vae_reaches
from engine.vram import Offloaded, VramPlan, module_bytes, plan_vram

DEFAULT_DIT = "acestep-v15-turbo"
DEFAULT_TURBO_STEPS = 8
DEFAULT_BASE_STEPS = 50
WARM_UP_S = (20.0, 30.0)  # request lengths compiled at start: the bridge's repaint window, a 30 s song
CONDITIONING_CACHE_BYTES = 256 * 1024 * 1024

ProgressFn = Callable[[ProgressEvent], None] | None
CancelFn = Callable[[], bool] | None


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
        # A request that names no DiT runs on this one (the engine's --dit), whatever ran before.
        self.default_dit = dit_name
        self._dits: dict[str, AceStepConditionGenerationModel] = {dit_name: dit}
        # The fast path: cached source latents and region-only decode. Off = upstream's way
        # (encode the whole source and decode the whole output on every call).
        self.fast_path = True
        self.sources = SourceCache()
        self.conditioning_cache = LRU(CONDITIONING_CACHE_BYTES, _tensor_bytes)
        self.encoder_reach, self.decoder_reach = vae_reaches(vae)
        # Largest span (latent frames) decoded in one VAE call on the fast path; longer ones are tiled.
        self.single_decode_frames = 2400 if device.type == "cuda" else 1200

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoints(cls, root, dit: str = DEFAULT_DIT, lm: str | None = None, device=None,
                         dtype=None, compile: str | bool = "off", low_vram: bool | None = None,
                         warm_up_s: tuple[float, ...] = WARM_UP_S) -> Pipeline:
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
            for module in modules:
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
            warnings.warn(f"--compile auto: {problem}; the DiT runs eager", stacklevel=2)
            self.compile_dit, self._compiled_decoder = False, None

    def load_dit(self, name: str, default: bool = True) -> None:
        """Make checkpoint folder `name` the active DiT (text encoder and VAE stay loaded).

        `default=True` (the service's model switch) also makes it the DiT of requests that name none.
        The default DiT stays loaded beside one other; a third replaces the other. When the GPU is too
        small for everything (`plan_vram`), the DiTs not in use wait in CPU memory.
        """
        if "/" in name or "\\" in name or name.startswith("."):
            raise EngineError(f"dit: '{name}' must be a checkpoint folder name such as {DEFAULT_DIT}")
        model = self._dits.get(name)
        if model is None:
            checkpoints.validate_folder(self.root / name, "dit")
            for other in [n for n in self._dits if n != self.default_dit]:
                del self._dits[other]
            if self.vram.offload:
                self._park_dits(keep=None)
            model = AceStepConditionGenerationModel.from_folder(self.root / name, self.device, self.dtype)
            self._dits[name] = model
        self.dit, self.dit_name = model, name
        if default and name != self.default_dit:
            self._dits.pop(self.default_dit, None)
            self.default_dit = name
        self.plan_vram()
        if self.vram.offload:
            self._park_dits(keep=model)
        model.to(self.device)

    def _park_dits(self, keep) -> None:
        """Move every loaded DiT but `keep` to CPU memory (CUDA only)."""
        if self.device.type != "cuda":
            return
        for model in self._dits.values():
            if model is not keep:
                model.to("cpu")
        torch.cuda.empty_cache()

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
        return {"dit": self.dit_name, "default_dit": self.default_dit, "lm": self.lm_name,
                "device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "checkpoints": str(self.root),
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

    def encode_waveform(self, wave: torch.Tensor, on_tile=None) -> torch.Tensor:
        """[2, S] -> VAE posterior-mean latents [S // 1920, 64] on the run device/dtype (tiled)."""
        return self.vae.encode(wave[None], tiled=True, on_tile=on_tile)[0].to(self.device, self.dtype)

    def task_context(self, encode_source=None, encode_audio=None) -> TaskContext:
        """The narrow view of the models that `engine.tasks` works with."""
        dit = self.dit

        def decode_codes(codes: list[int]) -> torch.Tensor:
            indices = torch.tensor(codes, dtype=torch.long, device=self.device)[None, :, None]
            quantized = dit.tokenizer.quantizer.codes_to_output(indices)
            return dit.detokenize(quantized.to(self.dtype))

        def tokenize_latents(latents: torch.Tensor):
            quantized, indices = dit.tokenize(latents)
            return dit.detokenize(quantized), quantized, indices

        return TaskContext(encode_source=encode_source or self.encode_waveform,
                           encode_audio=encode_audio or self.encode_waveform,
                           decode_codes=decode_codes, tokenize_latents=tokenize_latents,
                           silence_latent=self.silence_latent, timbre_frames=dit.config.timbre_fix_frame,
                           is_turbo=self.is_turbo, dit_name=self.dit_name,
                           enforce_region_limits=self.enforce_region_limits, device=self.device, dtype=self.dtype)

    def generate(self, request: GenerationRequest, progress: ProgressFn = None, cancel: CancelFn = None,
                 dump: bool = False) -> GenerationOutput:
        emit = progress or (lambda event: None)
        timings: dict[str, float] = {}
        request.ensure_valid()
        wanted = request.dit or self.default_dit
        if wanted != self.dit_name:
            emit(ProgressEvent("load", 0, 1, f"loading DiT {wanted}"))
            started = time.perf_counter()
            self.load_dit(wanted, default=False)
            timings["load"] = time.perf_counter() - started
        lora_name, lora_scale = self.loras.activate(self.dit.decoder, request.lora, request.lora_scale)
        lm_plan = None
        # Upstream plans whenever an LM is loaded and thinking or a use_cot_* flag asks for it
        # (never for cover / repaint / extract).
        from engine.lm.planner import Planner

        if Planner.should_plan(request) and (request.thinking or self.lm is not None):
            started = time.perf_counter()
            request, lm_plan = self._plan_with_lm(request, progress, cancel)
            timings["lm"] = time.perf_counter() - started

        batch = request.batch_size
        seeds = request.item_seeds() or [random.SystemRandom().randint(0, 2 ** 32 - 1) for _ in range(batch)]
        work = Work(decoder_receptive_field=self.decoder_reach.frames)
        with torch.no_grad():
            started = time.perf_counter()
            ctx = self.task_context(encode_source=self._source_encoder(work, emit, cancel),
                                    encode_audio=self._audio_encoder(work, emit, cancel))
            cond = build_conditioning(ctx, request, batch, progress, cancel)
            timings["encode_audio"] = time.perf_counter() - started
            audio_items, full_items, dumped = self._run(request, cond, seeds, emit, cancel, dump, timings, work)
        if dump and lm_plan is not None:
            dumped.update(lm_plan.dump_tensors())
        return GenerationOutput(
            audio=audio_items, sample_rate=request.output_sample_rate or SAMPLE_RATE, seeds=seeds,
            request=request.to_dict(),
            timings=timings, lm_plan=lm_plan.to_dict() if lm_plan else None, dump=dumped if dump else None,
            models={"dit": self.dit_name, "lm": self.lm_name or "", "lora": lora_name or "",
                    "lora_scale": lora_scale if lora_name else None},
            work=work.to_dict(), full_audio=full_items,
        )

    # ------------------------------------------------------------------ VAE with progress, cancel, caching
    def _tile_progress(self, stage: str, what: str, emit, cancel, count=None):
        """A VAE `on_tile` hook: progress per tile, cancel between tiles, and `count(size)` of the work."""
        def on_tile(done: int, total: int, size: int) -> None:
            if count is not None:
                count(size)
            emit(ProgressEvent(stage, done, total, f"{what}: tile {done}/{total}"))
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
        return on_tile

    def _audio_encoder(self, work: Work, emit, cancel):
        """Reference audio: encoded whole, every frame through the encoder counted."""
        on_tile = self._tile_progress("encode_audio", "encoding reference audio", emit, cancel,
                                      count=lambda samples: work.add_encoded(samples // HOP_SAMPLES))
        return lambda wave: self.encode_waveform(wave, on_tile)

    def _source_encoder(self, work: Work, emit, cancel):
        """Source audio: through the source cache on the fast path, else encoded whole."""
        on_tile = self._tile_progress("encode_audio", "encoding source audio", emit, cancel,
                                      count=lambda samples: work.add_encoded(samples // HOP_SAMPLES))

        def encode_part(wave: torch.Tensor, start: int, end: int):
            return encode_span(self.vae, wave, start, end, self.encoder_reach, on_tile)

        def encode(wave: torch.Tensor) -> torch.Tensor:
            if not self.fast_path:
                work.source_cache = "miss"
                return self.encode_waveform(wave, on_tile)
            report = EncodeReport()
            latents = self.sources.encode(wave, encode_part, self.encoder_reach, report)
            work.source_cache = report.status
            return latents.to(self.device, self.dtype)
        return encode

    def _encode_phase(self, cond: Conditioning, index: int, text_length: int | None,
                      cacheable: bool) -> tuple[dict[str, torch.Tensor], bool]:
        """Text, lyrics, condition encoder and context latents of one conditioning phase.

        The text side depends only on the prompts, the DiT and the timbre; with the silence timbre
        (`cacheable`) it is kept in an LRU, so an unchanged caption/lyrics/metas encode nothing.
        Returns (tensors, cache hit).
        """
        phase = cond.phases[index]
        key = (self.dit_name, tuple(phase.caption_prompts), tuple(phase.lyric_prompts), text_length)
        text_side = self.conditioning_cache.get(key) if cacheable else None
        hit = text_side is not None
        if text_side is None:
            text = self._tokens(phase.caption_prompts, CAPTION_MAX_TOKENS)
            if text_length is not None:  # later phases keep the first phase's caption length (as upstream)
                text = pad_or_truncate(text, text_length, self.text_encoder.pad_id)
            lyrics = self._tokens(phase.lyric_prompts, LYRIC_MAX_TOKENS)
            text_hidden = self.text_encoder.encode_captions(text.ids).to(self.dtype)
            lyric_hidden = self.text_encoder.embed_lyrics(lyrics.ids).to(self.dtype)
            enc, enc_mask = self.dit.encode_conditions(text_hidden, text.mask, lyric_hidden, lyrics.mask,
                                                       cond.refer_packed.to(self.dtype), cond.refer_order_mask)
            text_side = {"text_token_ids": text.ids, "text_attention_mask": text.mask, "lyric_token_ids": lyrics.ids,
                         "lyric_attention_mask": lyrics.mask, "text_hidden_states": text_hidden,
                         "lyric_hidden_states": lyric_hidden, "encoder_hidden_states": enc,
                         "encoder_attention_mask": enc_mask}
            if cacheable:
                self.conditioning_cache.put(key, text_side)
        context = self.dit.context_latents(phase.src_latents.to(self.dtype), phase.chunk_masks, phase.is_covers,
                                           phase.lm_hints)
        return {**text_side, "context_latents": context}, hit

    def _run(self, request: GenerationRequest, cond: Conditioning, seeds: list[int], emit, cancel, dump: bool,
             timings: dict, work: Work):
        started = time.perf_counter()
        emit(ProgressEvent("encode_text", 0, 1, "encoding caption and lyrics"))
        cacheable = self.fast_path and request.reference_audio is None
        first, hit = self._encode_phase(cond, 0, None, cacheable)
        encoded, hits = [first], [hit]
        for index in range(1, len(cond.phases)):
            more, hit = self._encode_phase(cond, index, first["text_token_ids"].shape[1], cacheable)
            encoded.append(more)
            hits.append(hit)
        work.conditioning_cache = "hit" if all(hits) else "miss"
        settings = self.sampler_settings(request)
        settings.repaint = cond.repaint
        if len(cond.phases) > 1:
            settings.switch_step = int(sampler_steps(settings) * cond.phases[1].from_fraction)
        phases = [(e["encoder_hidden_states"], e["context_latents"]) for e in encoded]
        timings["encode_text"] = time.perf_counter() - started

        started = time.perf_counter()
        noise = self._noise(seeds, cond.frames)
        trace: dict = {}
        if dump:
            settings.trace = trace
        work.dit_steps = sampler_steps(settings)
        work.dit_tokens = -(-cond.frames // self.dit.config.patch_size)
        compiled = self.compile_dit and self._compiled_decoder() is self.dit.decoder
        denoiser = _Denoiser(self.dit, phases, settings.guidance_scale > 1.0, compiled)
        # Off the fast path the sampler gets the plain call (no `prepare`): the step-by-step loop.
        model_call = denoiser if self.fast_path else denoiser.__call__
        latents = sample(model_call, noise, settings, progress=emit, cancel=cancel)
        timings["diffusion"] = time.perf_counter() - started
        if not torch.isfinite(latents).all():
            raise EngineError("the sampler produced NaN/Inf latents (try float32 or another seed)")

        started = time.perf_counter()
        emit(ProgressEvent("decode", 0, 1, "decoding audio"))
        wave = self._decode(latents, cond, request, work, emit, cancel)
        timings["decode"] = time.perf_counter() - started

        started = time.perf_counter()
        emit(ProgressEvent("postprocess", 0, 1, "normalising"))
        hook = None
        if cond.splice is not None:
            splice = cond.splice
            hook = lambda decoded: splice_waveform(decoded, splice.wave.to(decoded.device), splice.start_s,  # noqa: E731
                                                   splice.end_s, splice.crossfade_s)
        wave = postprocess_audio(wave, hook, request.enable_normalization, request.normalization_db)
        audio_items = [item.cpu().numpy().astype(np.float32) for item in wave]
        if self.fast_path:
            for audio, item_latents in zip(audio_items, latents):
                self.sources.remember(torch.from_numpy(audio), item_latents)
        full_items = None
        if request.output_region is not None or request.output_sample_rate not in (None, SAMPLE_RATE):
            full_items = audio_items
            audio_items = [shape_output(item, request.output_region, request.output_sample_rate or SAMPLE_RATE)
                           for item in audio_items]
        timings["postprocess"] = time.perf_counter() - started

        dumped = None
        if dump:
            main = cond.phases[0]
            dumped = {**encoded[0], "refer_audio_order_mask": cond.refer_order_mask,
                      "src_latents": main.src_latents, "chunk_masks": main.chunk_masks, "is_covers": main.is_covers,
                      "noise": noise, "pred_latents": latents, "audio": wave[0] if wave.shape[0] == 1 else wave,
                      **trace, **cond.dump}
            if len(encoded) > 1:
                second = encoded[1]
                dumped.update(non_cover_text_token_ids=second["text_token_ids"],
                              non_cover_text_attention_mask=second["text_attention_mask"],
                              non_cover_text_hidden_states=second["text_hidden_states"],
                              encoder_hidden_states_non_cover=second["encoder_hidden_states"],
                              encoder_attention_mask_non_cover=second["encoder_attention_mask"],
                              context_latents_non_cover=second["context_latents"])
            dumped = {k: (v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu())
                      for k, v in dumped.items() if isinstance(v, torch.Tensor)}
        return audio_items, full_items, dumped

    def _decode(self, latents: torch.Tensor, cond: Conditioning, request: GenerationRequest, work: Work,
                emit, cancel) -> torch.Tensor:
        """Latents [B, T, 64] -> audio [B, 2, T * 1920].

        Repaint on the fast path decodes only the frames whose audio is heard (the region and its
        crossfades) plus the decoder's reach, and takes the rest from the source; the splice then
        gives exactly what a full decode would.
        """
        frames = latents.shape[1]
        splice = cond.splice
        total_samples = frames * HOP_SAMPLES
        if self.fast_path and splice is not None and splice.wave.shape[-1] >= total_samples:
            start, end = splice.generated_frames(frames)
            span = end - start + self.decoder_reach.left_frames + self.decoder_reach.right_frames
            tiled = request.use_tiled_decode and span > self.single_decode_frames
            counted = self._tile_progress("decode", "decoding audio", emit, cancel, count=work.add_decoded)
            part, _ = decode_span(self.vae, latents, start, end, self.decoder_reach, tiled=tiled, on_tile=counted)
            wave = splice.wave[..., :total_samples].to(part.device, torch.float32)
            wave = wave.expand(latents.shape[0], -1, -1).clone()
            wave[..., start * HOP_SAMPLES:end * HOP_SAMPLES] = part.float()
            return wave

        counted = self._tile_progress("decode", "decoding audio", emit, cancel, count=work.add_decoded)
        return self.vae.decode(latents, tiled=request.use_tiled_decode, on_tile=counted).float()


@dataclass
class Work:
    """What one generation cost, in the job JSON's fixed `work` shape (latent frames at 25 Hz)."""

    encoded_frames: int = 0
    decoded_frames: int = 0
    dit_tokens: int = 0                  # per step and per batch item
    dit_steps: int = 0
    decoder_receptive_field: int = 0     # latent frames each side, from the VAE's layers
    source_cache: str = "none"           # hit | partial | miss | none
    conditioning_cache: str = "miss"     # hit | miss

    def add_encoded(self, frames: int) -> None:
        self.encoded_frames += frames

    def add_decoded(self, frames: int) -> None:
        self.decoded_frames += frames

    def to_dict(self) -> dict:
        return {"encoded_frames": self.encoded_frames, "decoded_frames": self.decoded_frames,
                "dit_tokens": self.dit_tokens, "dit_steps": self.dit_steps,
                "decoder_receptive_field": self.decoder_receptive_field,
                "cache": {"source": self.source_cache, "conditioning": self.conditioning_cache}}


def _tensor_bytes(value: dict) -> int:
    return sum(t.numel() * t.element_size() for t in value.values() if isinstance(t, torch.Tensor))


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


def shape_output(audio: np.ndarray, region: list[float] | None, rate: int,
                 margin_s: float = 0.05) -> np.ndarray:
    """[2, N] at 48 kHz -> the `region` [start_s, end_s] (end -1 = the end) at `rate`, cut sample-exact.

    The cut is made at the target rate: samples int(start_s * rate) .. int(end_s * rate), so a clip
    of N bars has exactly N bars of samples; where the region runs past the output (the output is
    whole 40 ms latent frames) the rest is silence. Only the region plus `margin_s` each side is
    resampled (soxr VHQ), so the filter sees real context.
    """
    total_s = audio.shape[-1] / SAMPLE_RATE
    start_s, end_s = (0.0, total_s) if region is None else (float(region[0]), float(region[1]))
    if end_s < 0:
        end_s = total_s
    if start_s >= total_s:
        raise EngineError(f"output_region: starts at {start_s:.3f} s, but the output is {total_s:.3f} s long")
    first, length = int(start_s * rate), int(end_s * rate) - int(start_s * rate)
    out = np.zeros((audio.shape[0], length), dtype=np.float32)
    if rate == SAMPLE_RATE:
        piece = audio[:, first:first + length]
    else:
        import soxr

        lo = max(0, int((start_s - margin_s) * SAMPLE_RATE))
        hi = min(audio.shape[-1], int((end_s + margin_s) * SAMPLE_RATE) + 1)
        resampled = soxr.resample(np.ascontiguousarray(audio[:, lo:hi].T), SAMPLE_RATE, rate, quality="VHQ").T
        offset = max(0, first - round(lo * rate / SAMPLE_RATE))
        piece = resampled[:, offset:offset + length]
    out[:, :piece.shape[-1]] = piece
    return out


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
