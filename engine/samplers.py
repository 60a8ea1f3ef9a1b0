"""Flow-matching samplers of ACE-Step 1.5 (pure tensor code; the model comes in as a callable).

Convention: x_t = t * noise + (1 - t) * x0, t = 1 is pure noise, the DiT predicts v = noise - x0,
and every step is an Euler step x <- x - v * (t_k - t_{k+1}). The turbo schedule has no terminal
0 in its table, but its final "x0 = x - v * t" is the same Euler step to t = 0, so both samplers
share one loop over (t_k, t_{k+1}) pairs that ends at 0.

Extras, in upstream's order after each update: DCW (wavelet-domain correction), then repaint
step injection; after the loop, the repaint boundary blend. CFG (base/sft models) runs the
condition and the null condition as one batch [cond; uncond] and combines them with APG
(default) or ADG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from engine.regions import ramp_mask
from engine.types import Cancelled, ProgressEvent

MAX_TURBO_STEPS = 20
APG_MOMENTUM = -0.75
APG_NORM_THRESHOLD = 2.5
ADG_ANGLE_CLIP = 3.14 / 6


# ----------------------------------------------------------------------------- schedules
def turbo_timesteps(shift: float, steps: int) -> torch.Tensor:
    """t_k = s*u / (1 + (s-1)*u), u = 1 - k/n, k = 0..n-1, n = min(steps, 20); float32 [n]."""
    n = max(1, min(int(steps), MAX_TURBO_STEPS))
    u = torch.tensor([1.0 - k / n for k in range(n)], dtype=torch.float32)
    return shift * u / (1 + (shift - 1) * u)


def base_timesteps(shift: float, steps: int) -> torch.Tensor:
    """linspace(1, 0, n+1) in float32, then the same shift map in float32; [n+1], ends at 0."""
    t = torch.linspace(1.0, 0.0, int(steps) + 1, dtype=torch.float32)
    if shift != 1.0:
        t = shift * t / (1 + (shift - 1) * t)
    return t


# ----------------------------------------------------------------------------- DCW
@dataclass
class DCWSettings:
    mode: str = "double"   # double | low | high | pix
    scaler: float = 0.05
    high_scaler: float = 0.02


def haar_lowpass(d: torch.Tensor) -> torch.Tensor:
    """Project [B, T, C] onto the Haar low band along time: each frame pair -> its mean.

    An odd last frame is paired with a zero frame (the zero-padded DWT), so it becomes d/2.
    """
    b, t, c = d.shape
    padded = torch.nn.functional.pad(d, (0, 0, 0, t % 2))
    means = padded.reshape(b, -1, 2, c).mean(dim=2, keepdim=True)
    return means.expand(-1, -1, 2, -1).reshape(b, -1, c)[:, :t]


def dcw_correct(x_new: torch.Tensor, x0_hat: torch.Tensor, t: float, settings: DCWSettings) -> torch.Tensor:
    """x_new + λ_L·P_L(x_new − x̂0) + λ_H·P_H(x_new − x̂0), computed in float32."""
    d = (x_new - x0_hat).float()
    if settings.mode == "pix":
        return (x_new.float() + settings.scaler * d).to(x_new.dtype)
    low = haar_lowpass(d)
    high = d - low
    out = x_new.float()
    if settings.mode in ("double", "low"):
        out = out + (t * settings.scaler) * low
    if settings.mode == "double":
        out = out + ((1.0 - t) * settings.high_scaler) * high
    elif settings.mode == "high":
        out = out + ((1.0 - t) * settings.scaler) * high
    return out.to(x_new.dtype)


# ----------------------------------------------------------------------------- guidance
class APG:
    """Adaptive projected guidance with a momentum buffer that lives for one generation."""

    def __init__(self, momentum: float = APG_MOMENTUM, norm_threshold: float = APG_NORM_THRESHOLD):
        self.momentum = momentum
        self.norm_threshold = norm_threshold
        self.running = None

    def __call__(self, v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
        diff = v_cond - v_uncond
        self.running = diff if self.running is None else diff + self.momentum * self.running
        diff = self.running
        if self.norm_threshold > 0:
            norm = diff.norm(p=2, dim=1, keepdim=True)  # over the time axis of [B, T, C]
            diff = diff * torch.minimum(torch.ones_like(diff), self.norm_threshold / norm)
        unit = torch.nn.functional.normalize(v_cond.double(), dim=1)
        d = diff.double()
        parallel = (d * unit).sum(dim=1, keepdim=True) * unit
        orthogonal = (d - parallel).to(diff.dtype)
        return v_cond + (scale - 1) * orthogonal


def adg(x: torch.Tensor, v_cond: torch.Tensor, v_uncond: torch.Tensor, t: torch.Tensor, scale: float) -> torch.Tensor:
    """Angle-based dynamic guidance on the x0 estimates (per frame, over channels)."""
    b, frames, c = v_cond.shape
    sigma = t.reshape(-1, 1, 1).to(x.dtype)
    weight = scale - 1
    weight = weight * (weight > 0) + 1e-3
    x0_cond = x - sigma * v_cond
    x0_uncond = x - sigma * v_uncond
    diff = x0_cond - x0_uncond
    a = x0_cond.reshape(-1, c).double()
    u = x0_uncond.reshape(-1, c).double()
    cos = ((a / a.norm(dim=1, keepdim=True)) * (u / u.norm(dim=1, keepdim=True))).sum(dim=1, keepdim=True)
    theta = torch.acos(cos.clamp(-1.0 + 1e-6, 1.0 - 1e-6)).reshape(b, frames, 1)
    theta_new = torch.clip(weight * theta, -ADG_ANGLE_CLIP, ADG_ANGLE_CLIP)
    uf = x0_uncond.reshape(-1, c).float()
    df = diff.reshape(-1, c).float()
    proj = ((df * uf).sum(dim=1, keepdim=True) / ((uf * uf).sum(dim=1, keepdim=True) + 1e-8)) * uf
    perp = (df - proj).reshape(b, frames, c)
    sin = torch.sin(theta)
    x0_new = torch.cos(theta_new) * x0_cond + (perp * torch.sin(theta_new) / sin * (sin > 1e-3)
                                               + perp * weight * (sin <= 1e-3))
    return ((x - x0_new) / sigma).reshape(b, frames, c).to(x.dtype)


# ----------------------------------------------------------------------------- repaint
@dataclass
class RepaintSettings:
    """Keep the outside of `mask` close to `clean` (spec §8.4).

    mask [B, T] bool (True = generate), clean [B, T, 64] source latents. For the first
    round(injection_ratio * n) steps the outside is reset to t_next*noise + (1-t_next)*clean;
    after sampling, `crossfade_frames` linear ramps blend the edges back to `clean`.
    """
    mask: torch.Tensor
    clean: torch.Tensor
    injection_ratio: float = 0.5
    crossfade_frames: int = 12


def repaint_inject(x: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, t_next: float,
                   noise: torch.Tensor) -> torch.Tensor:
    renoised = t_next * noise + (1.0 - t_next) * clean
    return torch.where(mask[..., None].expand_as(x), x, renoised)


def boundary_soft_mask(mask: torch.Tensor, crossfade_frames: int) -> torch.Tensor:
    """[B, T]: 1 inside each row's region, `ramp_mask` ramps of `crossfade_frames` outside its edges."""
    soft = mask.float().clone()
    if crossfade_frames <= 0:
        return soft
    for b in range(mask.shape[0]):
        row = mask[b]
        if bool(row.all()) or not bool(row.any()):
            continue
        inside = torch.nonzero(row).flatten()
        left, right = int(inside[0]), int(inside[-1]) + 1
        soft[b] = ramp_mask(mask.shape[1], left, right, crossfade_frames).to(soft.device)
    return soft


def repaint_blend(x: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, crossfade_frames: int) -> torch.Tensor:
    m = boundary_soft_mask(mask, crossfade_frames)[..., None].to(x.dtype)
    return m * x + (1.0 - m) * clean


# ----------------------------------------------------------------------------- the loop
# denoise(x [B', T, 64], t [B'] , phase) -> v. phase 0 = main conditioning, 1 = after the cover
# switch. With CFG the sampler passes [x; x] and expects rows [cond; uncond].
# A denoiser may also offer `prepare(timesteps [steps]) -> step(x, k, phase)`: the sampler then
# hands it the whole schedule once (in the model dtype, on the model device) and calls `step`
# with the step index, so per-step set-up (time embeddings, masks, RoPE) happens only once.
Denoiser = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


@dataclass
class SamplerSettings:
    timesteps: torch.Tensor                 # float32 schedule, ends at 0 (see `schedule_with_end`)
    guidance_scale: float = 1.0             # > 1 enables CFG
    use_adg: bool = False
    cfg_interval_start: float = 0.0
    cfg_interval_end: float = 1.0
    dcw: DCWSettings | None = None
    switch_step: int | None = None          # cover strength < 1: phase 1 from this step on
    repaint: RepaintSettings | None = None
    trace: dict | None = field(default=None) # filled with sampler_xt / sampler_t / dit_velocity_step0


def schedule_with_end(timesteps: torch.Tensor) -> torch.Tensor:
    """Append the terminal 0 to a turbo table (base schedules already end at 0)."""
    if float(timesteps[-1]) == 0.0:
        return timesteps
    return torch.cat([timesteps, timesteps.new_zeros(1)])


def sample(denoise: Denoiser, noise: torch.Tensor, settings: SamplerSettings,
           progress: Callable[[ProgressEvent], None] | None = None,
           cancel: Callable[[], bool] | None = None) -> torch.Tensor:
    """Run the sampler from `noise` [B, T, 64] and return the final latents."""
    schedule = schedule_with_end(settings.timesteps.float().cpu())
    steps = len(schedule) - 1
    cfg = settings.guidance_scale > 1.0
    apg = APG()
    repaint = settings.repaint
    injection_steps = round(repaint.injection_ratio * steps) if repaint is not None else 0
    trace = settings.trace
    if trace is not None:
        trace.update(sampler_xt=[], sampler_t=[])

    x = noise
    batch, device, dtype = x.shape[0], x.device, x.dtype
    # Upstream keeps the schedule in the model dtype (bf16 on GPU: t = 0.953125, not 21/22).
    schedule = schedule.to(dtype).float()
    # Device copies made once, so the loop below never waits on the host or copies per step.
    t_device = schedule.to(device=device, dtype=dtype)
    dt_device = (schedule[:-1].double() - schedule[1:].double()).to(device=device, dtype=dtype)
    rows = 2 * batch if cfg else batch
    prepare = getattr(denoise, "prepare", None)
    step = prepare(t_device[:steps]) if prepare is not None else None
    phase = 0
    for k in range(steps):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        if settings.switch_step is not None and k >= settings.switch_step:
            phase = 1
        t_cur, t_next = schedule[k], schedule[k + 1]
        t_value = float(t_cur)
        t_tensor = t_device[k].expand(rows)
        x_in = torch.cat([x, x]) if cfg else x
        v = step(x_in, k, phase) if step is not None else denoise(x_in, t_tensor, phase)
        if trace is not None:
            trace["sampler_xt"].append(x.detach().clone())
            trace["sampler_t"].append(t_cur.clone())
            if k == 0:
                trace["dit_velocity_step0"] = v.detach().clone()
        if cfg:
            v_cond, v_uncond = v.chunk(2)
            if settings.cfg_interval_start <= t_value <= settings.cfg_interval_end:
                if settings.use_adg:
                    v = adg(x, v_cond, v_uncond, t_tensor[:batch], settings.guidance_scale)
                else:
                    v = apg(v_cond, v_uncond, settings.guidance_scale)
            else:
                v = v_cond
        x_prev = x
        x = x - v * dt_device[k]
        if settings.dcw is not None:
            x0_hat = x_prev - v * t_tensor[:batch, None, None]
            x = dcw_correct(x, x0_hat, t_value, settings.dcw)
        if repaint is not None and k < injection_steps:
            x = repaint_inject(x, repaint.clean, repaint.mask, float(t_next), noise)
        if progress is not None:
            progress(ProgressEvent("diffusion", k + 1, steps, f"step {k + 1}/{steps} (t={t_value:.3f})"))
    if repaint is not None and repaint.crossfade_frames > 0:
        x = repaint_blend(x, repaint.clean, repaint.mask, repaint.crossfade_frames)
    if trace is not None:
        trace["sampler_xt"] = torch.stack(trace["sampler_xt"])
        trace["sampler_t"] = torch.stack(trace["sampler_t"])
    return x
