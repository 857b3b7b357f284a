"""The one STIV trainer: flow matching with AdaFactor, EMA, Orbax checkpoints, exact resume.

  python -m stiv_jax.train --config configs/stiv.py:variant=S --workdir runs/stiv_s \
      [--config.train.steps=1000 ...]

Shapes: B batch, T pixel frames, F latent frames, H/W latent size, C latent channels,
L text tokens, Dt/Dp text widths.

Sections: setup (encoders, model, optimizer) · batches (host: decode, encode text and
latents, on a prefetch thread ahead of the step) · step (jitted, donated state) · loop
(log, checkpoint, sample, resume).

Console: our own lines (compiles with their time, sampling, resume) and warnings under one
tqdm bar; `--verbosity=1` adds every library's log lines (Orbax, JAX), `-1` warnings only.
TensorBoard: `tensorboard --logdir <workdir>/tensorboard` (stiv_jax.summaries lists the tags).

Exactness: the step's rng is `fold_in(key(seed), step)`, the Grain iterator state is saved
with every checkpoint and `metrics.jsonl` is cut back to the restored step on resume, so a
run killed at any point and resumed logs the same losses as one that never stopped.

Faults: a NaN/inf loss or gradient never reaches the state (`train.nonfinite`: abort with one
line, or skip and count); SIGTERM or a first Ctrl-C saves and exits, a second Ctrl-C aborts;
config values are checked before any work (`run_checks`); a resume refuses another model
and falls back over damaged checkpoints (`checkpoint.restore_newest`).
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stiv_jax import checkpoint as ckpt
from stiv_jax import console, host_memory, stages, transfer
from stiv_jax import lora as lora_lib
from stiv_jax.conditioning import batch_conditions, drop_conditions, drop_states, get_image_cond
from stiv_jax.data.prefetch import Prefetch
from stiv_jax.data.schema import MODEL_BATCH
from stiv_jax.diffusion import (
    flow_loss,
    interpolate,
    motion_weight,
    perturbed_target,
    sample_time,
    to_data,
    to_velocity,
    velocity_target,
)
from stiv_jax.model import STIV
from stiv_jax.model.stiv import option, visible_pixels
from stiv_jax.optim import ema_decay, ema_update, lr_schedule, make_optimizer, state_layout_diff
from stiv_jax.parallel import host_data
from stiv_jax.parallel import mesh as mesh_lib
from stiv_jax.run_checks import model_diff, validate_train_config
from stiv_jax.runtime import Components, fill_train_grid
from stiv_jax.summaries import MetricsLog
from stiv_jax.timing import StepClock

# ============================================================================ setup


def init_state(
    model: STIV, tx: optax.GradientTransformation, *, lora: Any = None
) -> tuple[Any, dict]:
    """-> (graphdef, state) with state = {step, params, ema, opt} as pure pytrees.

    `lora`: config.train; with `lora_rank > 0` the state also holds the frozen `base` and
    the trained adapters `lora` (the optimizer's), and `params` is their merge
    (`stiv_jax.lora`)."""
    graphdef, params = nnx.split(model, nnx.Param)
    params = nnx.to_pure_dict(params)
    state = {
        "step": jnp.zeros([], jnp.int32),
        "params": params,
        "ema": jax.tree.map(jnp.copy, params),
    }
    if lora is not None and int(lora.get("lora_rank", 0)) > 0:
        key = jax.random.key(int(lora.get("seed", 0)) + 1)
        state["lora"] = lora_lib.init(params, int(lora.lora_rank), lora.lora_targets, key)
        state["base"] = jax.tree.map(jnp.copy, params)
        state["opt"] = tx.init(state["lora"])
    else:
        state["opt"] = tx.init(params)
    return graphdef, state


# ============================================================================ batches


def prepare_batch(batch: dict[str, np.ndarray], comps: Components) -> dict[str, jax.Array]:
    """Host batch (video or cached latents, captions or cached text) -> model batch
    (`stiv_jax.data.schema.MODEL_BATCH`)."""
    if "latents" in batch:
        latents = batch["latents"]
    else:
        latents = comps.autoencoder.encode(jnp.asarray(batch["video"], jnp.float32))
    if "text_tokens" in batch:
        tokens, mask, pooled = batch["text_tokens"], batch["text_mask"], batch["text_pooled"]
    else:
        emb = comps.text_encoder.encode([str(c) for c in batch["caption"]])
        tokens, mask, pooled = emb.tokens, emb.mask, emb.pooled
    out = dict(latents=latents, text_tokens=tokens, text_mask=mask, text_pooled=pooled,
               micro=batch["micro"], motion=batch["motion_score"], cond_mask=batch["cond_mask"])  # fmt: skip
    return {k: jnp.asarray(out[k], dtype) for k, (dtype, _) in MODEL_BATCH.items()}


# ============================================================================ step


SELF_COND_STREAM = 7  # fold_in index of the self-conditioning draw (the other keys unchanged)
REF_NOISE_STREAM = 8  # fold_in index of the reference-noise draw (model.ref_noise)
STATES_DROP_STREAM = 9  # fold_in index of the encoder-states draw (diffusion.states_drop)


def make_loss_fn(config, graphdef, null_text, *, masked: bool = True):
    """loss(params, batch, key) -> scalar flow-matching loss on the image-cond method's frames.

    `masked=False` turns MaskDiT off (the unmasked fine-tuning phase).
    """
    m, f = config.model, config.diffusion
    image_cond = get_image_cond(m.image_cond)

    def loss_fn(params, batch, key):
        k_t, k_eps, k_drop, k_mask, k_aug = jax.random.split(key, 5)
        x1 = batch["latents"]
        cond = drop_conditions(
            k_drop,
            batch_conditions(batch),
            null_text,
            text_drop=f.text_drop,
            image_drop=f.image_drop,
        )
        states_drop = float(f.get("states_drop", 0.0))
        if states_drop > 0:  # the caption through its word pieces alone (conditioning.py)
            k_states = jax.random.fold_in(k_drop, STATES_DROP_STREAM)
            cond = drop_states(cond, jax.random.uniform(k_states, (x1.shape[0],)) < states_drop)
        cond = image_cond.augment(k_aug, cond, f)
        if float(option(m, "ref_noise")) > 0:  # per-sample unit noise for the reference
            k_ref = jax.random.fold_in(k_aug, REF_NOISE_STREAM)
            cond = {**cond, "ref_eps": jax.random.normal(k_ref, x1.shape, jnp.float32)}
        t = sample_time(
            k_t,
            x1.shape[0],
            method=f.timestep_sampling,
            logit_mean=f.logit_mean,
            logit_std=f.logit_std,
            shift=f.shift,
            noisy_share=float(f.get("noisy_share", 0.0)),
            noisy_law=tuple(f.get("noisy_law", stages.DRILL_LAW)),
        )
        eps = jax.random.normal(k_eps, x1.shape, jnp.float32)
        model = nnx.merge(graphdef, params)
        perturb = float(f.get("input_perturb", 0.0))
        if perturb > 0:  # DDPM-IP: the input sees ε + γ·ξ, the target only ε (flow.py)
            xi = jax.random.normal(jax.random.fold_in(k_eps, 1), x1.shape, jnp.float32)
            x_t = interpolate(x1, eps + perturb * xi, t)
            target = perturbed_target(x1, eps, x_t, t, m.prediction)
        else:
            x_t = interpolate(x1, eps, t)
            target = velocity_target(x1, eps)
        mask_key = k_mask if masked else None
        if m.get("self_cond", False):  # half the steps see their own estimate (no gradient)
            cond = {**cond, "self_cond": self_estimate(model, x_t, t, cond, mask_key, key)}
        out = model(x_t, t, cond, mask_key=mask_key)
        v = to_velocity(out, x_t, t, m.prediction)
        weight = None
        if masked and m.mask_ratio > 0 and m.mask_loss_weight != 1.0:
            # MaskDiT: the denoising loss on kept tokens, weight λ on the masked ones.
            vis = visible_pixels(k_mask, x1.shape, m.patch_size, m.mask_ratio)  # [B, H, W]
            weight = jnp.where(vis, 1.0, m.mask_loss_weight)[:, None]
        if f.get("motion_weight", 0.0) > 0:  # what moves weighs more (flow.motion_weight)
            moving = motion_weight(x1, float(f.motion_weight))
            weight = moving if weight is None else weight * moving
        return flow_loss(v, target, image_cond.loss_mask(cond), weight)

    def self_estimate(model, x_t, t, cond, mask_key, key):
        """Self-conditioning's input (Chen et al. 2022): with probability 1/2 per step the
        model's own x̂1 at this x_t (a forward without the input, no gradient), else zeros
        (no estimate yet, as at the sampler's first step). Per step, under `lax.cond`, so the
        extra forward costs only where it is taken."""

        def estimate():
            out = model(x_t, t, cond, mask_key=mask_key)
            return jax.lax.stop_gradient(to_data(out, x_t, t, m.prediction))

        use = jax.random.bernoulli(jax.random.fold_in(key, SELF_COND_STREAM))
        return jax.lax.cond(use, estimate, lambda: jnp.zeros_like(x_t))

    return loss_fn


def make_train_step(config, graphdef, tx, null_text, *, masked: bool = True):
    """step(state, batch, base_key) -> (state, metrics); rng = fold_in(base_key, step).

    A step whose loss, gradient norm or update norm is not finite keeps the previous params,
    EMA and optimizer state (only `step` advances) and reports `finite=False` (one bool,
    computed on device): the state never holds NaN/inf, whatever `train.nonfinite` does next.
    """
    loss_fn = make_loss_fn(config, graphdef, null_text, masked=masked)
    decay = config.optim.ema_decay

    def step(state, batch, base_key):
        key = jax.random.fold_in(base_key, state["step"])
        extra = {}
        if "lora" in state:  # only the adapters train; params = their merge into the base
            scale = lora_lib.scale_of(config.train)

            def adapter_loss(ad):
                return loss_fn(lora_lib.merge(state["base"], ad, scale), batch, key)

            loss, grads = jax.value_and_grad(adapter_loss)(state["lora"])
            updates, opt = tx.update(grads, state["opt"], state["lora"])
            extra["lora"] = optax.apply_updates(state["lora"], updates)
            extra["base"] = state["base"]
            params = lora_lib.merge(state["base"], extra["lora"], scale)
        else:
            loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch, key)
            updates, opt = tx.update(grads, state["opt"], state["params"])
            params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        finite &= jnp.isfinite(optax.tree.norm(updates))
        new = {
            "params": params,
            "ema": ema_update(state["ema"], params, ema_decay(decay, state["step"])),
            "opt": opt,
            **extra,
        }
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, {k: state[k] for k in new})
        new["step"] = state["step"] + 1
        return new, {"loss": loss, "grad_norm": grad_norm, "finite": finite}

    return step


# ============================================================================ loop


class NonFiniteError(FloatingPointError):
    """A non-finite loss or gradient under `train.nonfinite="abort"` (one line, names the step)."""


class _Window:
    """Per-step (step, loss, grad_norm) since the last logged step, on the host.

    Device metrics wait in `pending` until a sync point (log, save, stop) moves them in one
    transfer and applies `train.nonfinite`. The window goes into each checkpoint's `log`
    item, so a resumed run's first `loss_avg` covers the same steps as an unbroken run's.
    """

    def __init__(self, saved: dict | None, policy: str):
        self.rows = [tuple(r) for r in (saved or {}).get("window", [])]
        self.policy, self.pending = policy, []

    def add(self, step: int, metrics: dict) -> None:
        self.pending.append((step, metrics))

    def settle(self) -> None:
        host = jax.device_get([m for _, m in self.pending])
        steps, self.pending = [s for s, _ in self.pending], []
        for step, m in zip(steps, host):
            loss, gnorm = float(m["loss"]), float(m["grad_norm"])
            if not bool(m["finite"]):
                if self.policy == "abort":
                    raise NonFiniteError(
                        f"loss {loss}, grad norm {gnorm} at step {step}: not finite; stopped "
                        "without saving it (train.nonfinite=abort; 'skip' drops such updates)"
                    )
                logging.warning("step %d: loss %s, grad norm %s; update skipped", step, loss, gnorm)
                loss = gnorm = None
            self.rows.append((step, loss, gnorm))

    def summary(self) -> dict[str, float | None]:
        """The metrics line of the window (then emptied); NaN/inf steps count as `skipped`."""
        _, loss, gnorm = self.rows[-1]
        finite = [r[1] for r in self.rows if r[1] is not None]
        out = {
            "loss": loss,
            "loss_avg": float(np.mean(np.asarray(finite, np.float32))) if finite else None,
            "grad_norm": gnorm,
        }
        if len(finite) < len(self.rows):
            out["skipped"] = len(self.rows) - len(finite)
        self.rows = []
        return out

    def state(self) -> dict:
        return {"window": [list(r) for r in self.rows]}


class _Stop:
    """SIGTERM (TPU VM maintenance) or a first Ctrl-C: save at the end of this step and exit.

    A second Ctrl-C aborts at once (KeyboardInterrupt, no save). `close` puts the previous
    handlers back (train_loop may run inside a larger program)."""

    def __init__(self):
        self.requested, self._old = None, {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (tests)
                pass

    def _handle(self, signum, _frame):
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt(f"second {name}: aborted without saving")
        self.requested = self.requested or name
        logging.warning(
            "%s: saving at the end of this step, then exiting (Ctrl-C again aborts)", name
        )

    def close(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _resume(config, workdir: str, mngr, target):
    """(step, state, data_state, log_state) of the newest restorable checkpoint, or Nones.

    Refuses (ckpt.Refusal, one line) a checkpoint trained with another model config unless
    `train.allow_model_change`; damaged steps are moved aside (ckpt.restore_newest)."""
    ckpt_dir = str(mngr.directory)

    def restore_step(s: int):
        saved = ckpt.saved_config(mngr, s)
        optim_diff = state_layout_diff(saved.get("optim", {}), config.optim)
        if optim_diff:  # the optimizer state could not restore: not damage
            raise ckpt.Refusal(
                f"checkpoint step {s} in {ckpt_dir} was trained with another optimizer state "
                f"({'; '.join(optim_diff)}); resume with its optim config, or start a new "
                f"--workdir with --config.train.init_from={workdir}"
            )
        diff = model_diff(saved.model, config.model)
        if diff and not config.train.allow_model_change:
            raise ckpt.Refusal(
                f"checkpoint step {s} in {ckpt_dir} was trained with another model "
                f"({'; '.join(diff)}); resume with its model config, use a new --workdir, or "
                "set --config.train.allow_model_change=True"
            )
        if diff:
            logging.warning("resuming step %d with a changed model: %s", s, "; ".join(diff))
        try:
            state = ckpt.restore(mngr, s, target)
        except Exception as e:
            if diff:  # a shape change, not damage: nothing is moved aside
                raise ckpt.Refusal(
                    f"checkpoint step {s} does not restore into the changed model "
                    f"({'; '.join(diff)}): {type(e).__name__}"
                ) from None
            raise
        data_dir = os.path.join(ckpt_dir, str(s), "data")
        data_state = host_data.read_data_states(data_dir)
        if data_state is None:
            if not os.path.isdir(data_dir):
                raise FileNotFoundError(f"{data_dir} is missing")
            raise ckpt.Refusal(f"checkpoint {s} in {ckpt_dir} has no data-shard states")
        return state, data_state, ckpt.restore_log(mngr, s)

    step, restored = ckpt.restore_newest(workdir, mngr, restore_step)
    return (step, *restored) if step is not None else (None, None, None, None)


def train_loop(config, workdir: str, *, comps: Components | None = None) -> dict:
    """Trains `config.train.steps` steps in `workdir`, resuming from its latest checkpoint."""
    from stiv_jax.data.pipeline import make_dataset

    ckpt.require_filesystem_path(workdir, "workdir")
    validate_train_config(config, workdir)  # before any directory or component exists
    transfer.inherit_train_grid(config)  # init_from: RoPE positions in the source's range
    fill_train_grid(config)
    t = config.train
    tx = make_optimizer(config.optim, int(t.steps))  # a bad schedule fails before any write
    comps = comps or Components(config)
    # State lives sharded on the mesh from the start (init is jitted with its shardings).
    mesh = mesh_lib.make_mesh(config.mesh)
    if int(t.get("lora_rank", 0)) > 0 and not t.get("init_from"):
        raise ValueError(
            f"train.lora_rank={t.lora_rank} trains adapters on a base model; set "
            f"train.init_from to that model's workdir"
        )
    graphdef, abstract, shardings, init = mesh_lib.sharded_init(
        lambda: comps.model(t.seed), lambda model: init_state(model, tx, lora=t), mesh
    )  # builds the model abstractly: a bad model value fails before the workdir exists
    os.makedirs(workdir, exist_ok=True)
    mngr = ckpt.manager(workdir, max_to_keep=t.max_to_keep, async_save=t.async_checkpoint)
    target = mesh_lib.abstract_with_shardings(abstract, shardings)
    latest, state, data_state, log_state = _resume(config, workdir, mngr, target)
    batch_size = int(config.data.batch_size)
    latent_frames = (
        comps.latent_shape[0] if config.data.source == "shapes" else comps.latent_frames
    )  # buckets: F per length
    # Data shards are fixed when a run starts, so it resumes on any host count or mesh.
    host = host_data.HostData(
        lambda v, n: make_dataset(
            config, latent_frames=latent_frames, process_index=v, process_count=n
        ),
        num_shards=data_state["num_shards"] if data_state else jax.process_count(),
        global_size=batch_size,
        rows=host_data.process_rows(mesh, batch_size),
    )
    # Text/latent encoding of the next batches runs on a thread while the step runs; its
    # state is that of the batches taken, so checkpoints and resume stay exact.
    data_iter = Prefetch(
        host,
        lambda hb: host_data.global_batch(
            jax.device_get(prepare_batch(hb, comps)), mesh, batch_size
        ),
        ahead=int(config.data.get("prefetch_batches", 2)),
    )
    if latest is not None:
        data_iter.set_state(data_state)
        logging.info("resumed from step %d in %s", latest, workdir)
    else:
        state = init()
        if t.get("init_from"):  # progressive training / fine-tuning: fresh step + optimizer
            state = transfer.init_state_from(config, state, shardings)
            # The optimizer starts at the transferred weights (optim.anchor_decay's anchor);
            # the first one's buffers go first, so the state is never held twice.
            for leaf in jax.tree.leaves(state.pop("opt")):
                leaf.delete()
            trained = state["lora"] if "lora" in state else state["params"]
            opt_init = jax.jit(tx.init, out_shardings=shardings["opt"])
            state["opt"] = mesh_lib.in_mesh(opt_init, mesh)(trained)
    start = int(state["step"])
    log = MetricsLog(workdir, resume_step=start, process_index=jax.process_index())
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    logging.info(
        "training %s (%.2f M params) from step %d to %d, batch %d; TensorBoard: "
        "tensorboard --logdir %s", config.model.get("variant", "STIV"), n_params / 1e6, start,
        t.steps, batch_size, os.path.join(workdir, "tensorboard"),
    )  # fmt: skip
    log.write_config(start, config)
    lr_at = lr_schedule(config.optim, int(t.steps))

    # MaskDiT pre-training, then `train.unmasked_steps` of unmasked fine-tuning (STIV §3.1).
    masked_until = t.steps - t.unmasked_steps if config.model.mask_ratio > 0 else 0
    base_key = jax.random.key(t.seed)
    step_fns = {}

    def compiled_step(masked: bool, state, batch):
        """The step for this phase and batch shape, compiled ahead of its first call (a
        resumed run may need only one phase; bucketed records data, one per length)."""
        key = (masked, tuple((k, v.shape) for k, v in sorted(batch.items())))
        if key not in step_fns:
            fn = make_train_step(config, graphdef, tx, comps.null_text, masked=masked)
            shard = (shardings, mesh_lib.replicated(mesh))
            jitted = jax.jit(fn, out_shardings=shard, donate_argnums=0)
            two_phases = 0 < masked_until < t.steps
            phase = "" if not two_phases else " (MaskDiT)" if masked else " (unmasked)"
            with clock.pause(), console.timed(f"compiling train step{phase}"), jax.set_mesh(mesh):
                compiled = jitted.lower(state, batch, base_key).compile()
            step_fns[key] = mesh_lib.in_mesh(compiled, mesh)
            bar.unpause()  # the bar's rate and ETA leave the compile out too
        return step_fns[key]

    window = _Window(log_state, t.nonfinite)
    # sec_per_step: wall time between log steps less every XLA compile and the sample videos
    # (neither is a training step; compiles made the first logged value 10x the rest).
    clock, timed = StepClock(), 0
    step = start
    bar = console.progress(total=t.steps, initial=start, desc="train", unit="step")
    stop = _Stop()
    try:
        while step < t.steps:
            batch = next(data_iter)
            masked = step < masked_until
            state, metrics = compiled_step(masked, state, batch)(state, batch, base_key)
            step += 1
            timed += 1
            bar.update(1)
            window.add(step, metrics)
            done = step == t.steps
            # Every host must stop at the same step: OR the stop flags over processes.
            stopping = mesh_lib.any_process(stop.requested is not None)
            log_now = step % t.log_every == 0 or done
            save = step % t.ckpt_every == 0 or done or stopping or mngr.reached_preemption(step)
            if log_now or save:
                window.settle()  # NonFiniteError here (abort) comes before any save
            if log_now:
                row = window.summary()
                dt = clock.elapsed() / max(timed, 1)
                row["lr"] = float(lr_at(step - 1))  # the rate of the update that made this step
                row["sec_per_step"] = dt
                row["samples_per_sec"] = batch_size / dt if dt > 0 else 0.0
                log.write(step, row)
                if row["loss"] is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}")
                clock.reset()
                timed = 0
            if save:
                ckpt.save(mngr, step, state, data_iter, config, log=window.state(), force=True)
            if t.sample_every and step % t.sample_every == 0 and not done:
                with clock.pause():
                    write_samples(config, comps, graphdef, state, workdir, step, log)
                bar.unpause()
            if stopping:
                why = stop.requested or "a stop signal on another process"
                logging.warning("%s: saved step %d, exiting", why, step)
                break
    except NonFiniteError as e:
        mngr.wait_until_finished()
        raise NonFiniteError(f"{e}; the last checkpoint is step {mngr.latest_step()}") from None
    finally:
        data_iter.close()
        stop.close()
        bar.close()
        mngr.wait_until_finished()  # never leave an async save half-written at exit
    if step == t.steps:
        write_samples(config, comps, graphdef, state, workdir, step, log)
    log.close()
    logging.info("done: step %d in %s", step, workdir)
    return state


def write_samples(
    config, comps: Components, graphdef, state, workdir: str, step: int, log=None
) -> list[str]:
    """TI2V samples for held-out ShapesBench cases -> workdir/samples/step_<N>/: <i>.mp4 with
    its GIF and frame strip, contact_sheet.png, captions.json; and to TensorBoard via `log`."""
    from stiv_jax.data.pipeline import heldout_cases
    from stiv_jax.pipeline import generate_cases

    if config.data.source != "shapes" or config.sample.num_train_samples <= 0:
        return []
    if jax.process_count() > 1:  # params span hosts; the sample job runs on every host
        logging.info("multi-host run: no trainer samples (run stiv_jax.sample)")
        return []
    cases = heldout_cases(config, config.sample.num_train_samples)
    params = state["ema"] if config.sample.use_ema else state["params"]
    out = os.path.join(workdir, "samples", f"step_{step}")
    with console.timed(f"sampling {len(cases)} videos → {out}"):
        paths, videos = generate_cases(config, comps, graphdef, params, cases, out)
    if log is not None:
        log.write_videos(step, videos, config.sample.fps)
    return paths


def main(argv=None) -> None:
    from absl import app, flags
    from ml_collections import config_flags

    cfg_flag = config_flags.DEFINE_config_file(
        "config", None, "configs/stiv.py:ARG", lock_config=True
    )
    wd_flag = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, samples).")
    flags.mark_flags_as_required(["config", "workdir"])

    def run(_):
        console.setup(flags.FLAGS.verbosity)
        try:
            logging.debug("host malloc: %s", host_memory.configure())  # before JAX starts
            mesh_lib.initialize_distributed()  # no-op for a single process
            config, workdir = cfg_flag.value, wd_flag.value
            # train.prelude, if any; a stage stopped by a signal stops the whole command
            if stages.run_prelude(config, workdir, train_loop):
                train_loop(config, workdir)
        except (ValueError, FileNotFoundError, NonFiniteError) as e:  # one line, no traceback
            raise SystemExit(f"error: {e}") from None
        except KeyboardInterrupt as e:  # a second Ctrl-C
            raise SystemExit(f"error: {e or 'interrupted'}") from None

    console.help_for(__name__)
    app.run(run, argv)


if __name__ == "__main__":
    main()
