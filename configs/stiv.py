"""STIV configs: `get_config("variant=S,frames=8,res=32,image_cond=frame_replace")`.

Launch (embedded default, CPU, ~15 min):
  python -m stiv_jax.train --config configs/stiv.py:variant=S --workdir runs/stiv_s
Launch (TPU pod; T5 text, Wan VAE: 1 + 4k frames, 16 latent channels; paths are
directories on the bucket mounted at /gcs/bucket, see docs/scale_out.md):
  python -m stiv_jax.train --config configs/stiv.py:variant=XL/2,res=256,frames=21 \
      --workdir /gcs/bucket/run --config.text_encoder.path=/gcs/bucket/t5-v1_1-xxl \
      --config.autoencoder.name=wan --config.autoencoder.path=/gcs/bucket/wan2.1-vae \
      --config.model.in_channels=16

The argument string is comma-separated `key=value` pairs:
  variant     tiny | S | XL/2 | XXL/2 | M/2 (`/p` sets the spatial patch; tiny and S use 2)
  frames      video frames T in pixels (latent frames follow from the autoencoder)
  res         square training resolution in pixels
  image_cond  frame_replace | frame_replace_ref | channel_concat | cross_attn
  stage       t2i | t2v | ti2v | drill: a stage of STIV's progressive recipe (default: the
              recipe below). drill: the direction drill (one object by default; TI2V on
              ShapesBench drill clips, t ~ logit-normal(-2.5, 0.5), 1,500 steps;
              docs/quality.md §9). t2i: frames=1 images (ShapesBench frames), temporal patch 1, text only;
              t2v: text only; ti2v: the full mix. Chain stages with train.init_from
              (stiv_jax.transfer; README "Progressive training"):
                python -m stiv_jax.train --config configs/stiv.py:variant=S,stage=t2i \
                    --workdir runs/s_t2i --config.train.steps=300
                python -m stiv_jax.train --config configs/stiv.py:variant=S,stage=t2v,res=16,frames=4 \
                    --workdir runs/s_t2v --config.train.steps=200 --config.train.init_from=runs/s_t2i
                python -m stiv_jax.train --config configs/stiv.py:variant=S,stage=ti2v \
                    --workdir runs/s_ti2v --config.train.steps=300 --config.train.init_from=runs/s_t2v
  recipe      main | long (S only; a stage argument runs that stage alone, without them).
              main: the README main job (docs/quality.md §25, §28), a 1,000-step binding
              drill (two swappable objects; xavier word pieces and key_shift on; 2
              attention heads of 64, RoPE base 100), then 870 steps of the full mix with 30% binding-drill
              clips and 30% of the noise levels from the drill's law, the last 200 cooling
              down; no guidance where a frame is given, T2V sampled image first
              (sample.t2v_image_first, the best of 4 first frames by the model's own
              caption score, sample.t2v_candidates); ~14 min on 2 CPU cores.
              long: the longer recipe (§22.3, §41), the same levers with a 3,000-step drill
              (the command stops if it has not bound, train.bind_min) and 9,000 steps of
              the mix, the last 1,800 cooling down (~70 min on 2 CPU cores); evaluate it
              with this config too:
                python -m stiv_jax.train --config configs/stiv.py:variant=S,recipe=long \
                    --workdir runs/stiv_s_long
                python -m stiv_jax.evaluate --config configs/stiv.py:variant=S,recipe=long \
                    --workdir runs/stiv_s_long --out runs/stiv_s_long/eval
  runlocal    shrink steps/batch for a laptop smoke run (flag, no value)
Anything else is overridden with `--config.a.b=v`.
"""

from __future__ import annotations

import ml_collections

from stiv_jax.conditioning import get_image_cond
from stiv_jax.model.variants import parse_variant
from stiv_jax.stages import DRILL_LAW, STAGES, apply_stage

_ARG_KEYS = ("variant", "frames", "res", "image_cond", "stage", "recipe", "runlocal")
RECIPES = ("main", "long")  # S recipes: the README main job, the longer recipe


def _parse_arg(arg: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (arg or "").split(",")):
        key, eq, value = part.partition("=")
        key = key.strip()
        if key not in _ARG_KEYS:
            raise ValueError(
                f"config argument {key!r} in {arg!r} is unknown; expected one of {_ARG_KEYS}"
            )
        if not eq and key != "runlocal":
            raise ValueError(f"config argument {part!r} needs a value, e.g. {key}=...")
        out[key] = value.strip() if eq else "1"
    return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    args = _parse_arg(arg)
    variant = parse_variant(args.get("variant", "S"))
    small = variant.name in ("tiny", "S")
    demo = variant.name == "S"  # the README main job's recipe (docs/quality.md)
    c = ml_collections.ConfigDict()
    c.arg = arg or ""  # the argument string this config was built from (saved with checkpoints)

    # ---------------------------------------------------------------- model
    m = c.model = ml_collections.ConfigDict()
    m.variant = variant.name  # registry name: tiny, S, XL/2, XXL/2, M/2
    m.depth = variant.depth  # number of main STIV blocks
    m.width = variant.width  # hidden size D
    m.heads = variant.heads  # attention heads N (head dim H = D / N)
    m.mlp_ratio = 4.0  # MLP hidden = mlp_ratio * D
    m.patch_size = variant.patch  # spatial patch p
    m.temporal_patch = 2  # temporal patch pt (1, 2 or 4); the paper uses 2
    # S: frame replacement plus the given frame on every frame's channels (docs/quality.md
    # §13: subject consistency 0.35 -> 0.55, video PSNR +0.5 dB, two seeds); else STIV's.
    m.image_cond = args.get(
        "image_cond", "frame_replace_ref" if demo else "frame_replace"
    )  # frame_replace | frame_replace_ref | channel_concat | cross_attn
    m.prediction = "data" if demo else "velocity"  # velocity | data (x-pred: output x1, v derived)
    m.ref_skip = False  # x-prediction adds the output to each frame's nearest given latent
    m.input_skip = False  # a zero-initialised linear map from each input patch to its output
    m.ref_gate = False  # x-prediction adds the nearest given latent times a gate the head predicts
    m.ref_gate_init = 0.0  # the ref_gate's value at init (1 = start as the static video)
    # Conditional image leakage (Zhao et al. 2024): noise on the reference channel, σ·(1 − t).
    m.ref_noise = 0.0  # σ at the noise end (0 = a clean reference; frame_replace_ref only)
    m.input_mix = False  # the head also predicts per-pixel weights over the input's channels
    m.self_cond = False  # self-conditioning: the model also reads its previous x̂1 (half the steps)
    m.mask_ratio = (
        0.0 if demo else 0.5
    )  # MaskDiT ratio of spatial positions dropped in training (0 = unmasked)
    m.mask_loss_weight = 1.0  # MaskDiT loss weight of masked tokens (1 = all equal, 0 = kept only)
    m.decoder_depth = 2  # MaskDiT decoder blocks that run on all tokens
    m.temporal_adaln = True  # AdaLN scale/shift/gate on temporal + cross attention too
    # Spatial attention's keys move by a velocity each token predicts × its frame index
    # (zero at init): content can be pushed to where it goes (docs/quality.md §21).
    m.key_shift = False
    m.causal_temporal = False  # causal temporal attention (ablation)
    m.rope_theta = 10000.0  # RoPE base
    # Initial QK-norm scale g (q and k): attention logits start bounded by sqrt(H)·g² (S: H =
    # 32, bound 5.7). 1.41 broke the main job's binding drill (docs/quality.md §28.2).
    m.qk_norm_init = 1.0
    m.rope_interpolation = True  # scale positions to the training grid when the grid differs
    m.train_grid = (0, 0, 0)  # (F', h, w) token grid RoPE was trained on; 0 = from data shape
    m.motion_cond = True  # Step-Video motion-score embedding in the singleton condition
    m.micro_cond = True  # micro-conditions (orig size, crop, stride) in the singleton condition
    m.attention_impl = "auto"  # auto | xla | pallas | splash | cudnn
    m.remat = "attention" if not small else "none"  # none | attention (save attn outputs) | full
    m.scan_blocks = not small  # nnx.scan over the main blocks (compile time at depth)
    m.dtype = "float32" if small else "bfloat16"  # compute dtype
    m.param_dtype = "float32"  # parameter storage dtype
    m.freq_dim = 256  # sinusoidal embedding width for t / micro / motion
    m.in_channels = 3 if small else 4  # latent channels C (must match the autoencoder)
    m.text_dim = 384 if small else 4096  # text token width Dt (MiniLM 384, T5-XXL 4096)
    m.text_refiner = 0  # trainable self-attention layers over the caption tokens (0 = none)
    m.text_window = 0  # half-width k: each token adds its ±k neighbours' mean (0 = off)
    # Word-piece bag buckets appended to the pooled vector (text_encoder.word_bag; 0 = off):
    # MiniLM's own pooled vector barely tells "moves left" from "moves right" (quality.md §10).
    word_bag = ml_collections.FieldReference(1024 if small else 0)
    m.pooled_dim = word_bag + (384 if small else 768)  # pooled width Dp: encoder's + word bag
    m.word_bag = word_bag  # the pooled vector's last columns that are the word bag (own term)
    # Hashed word pieces summed by relative position around each caption token (buckets; 0 =
    # off): lets an object's colour word say how that object moves (quality.md §20).
    word_pieces = ml_collections.FieldReference(0)
    m.word_pieces = word_pieces  # the encoder then adds each token's id as a last channel
    m.word_pieces_zero_init = True  # False: xavier kernel (from scratch: binds 2x sooner)

    # ---------------------------------------------------------------- data
    d = c.data = ml_collections.ConfigDict()
    d.source = "shapes"  # shapes (embedded ShapesBench) | records (ArrayRecord shards) | tfds
    d.path = ""  # shards dir for source=records
    d.res = int(args.get("res", 32 if small else 256))  # pixel resolution (square)
    d.frames = int(args.get("frames", 8 if small else 20))  # pixel frames T
    d.batch_size = 8 if small else 256  # global batch size
    d.num_workers = 0  # Grain worker processes (0 = in-process)
    d.seed = 0  # data shuffling / generation seed
    d.frame_stride = 1  # temporal stride when cropping clips
    # Task mix: probability that a training sample is T2V / TI2V / prediction / interpolation
    # / keyframes (1-3 latent frames at random positions given).
    d.task_probs = ml_collections.ConfigDict(
        {"t2v": 0.25, "ti2v": 0.5, "predict": 0.1, "interp": 0.1, "keyframes": 0.05}
    )
    d.predict_frames = 2  # given latent frames in the prediction task
    d.buckets = ml_collections.ConfigDict()  # records source: one shape per batch
    d.buckets.shapes = (f"{d.frames}x{d.res}x{d.res}",)  # "TxHxW" buckets
    d.buckets.weights = "count"  # bucket sampling: count (by data) | uniform
    d.read_threads = 2  # records source: decode threads
    d.prefetch_batches = 2  # batches prefetched ahead of the trainer
    d.tfds = ml_collections.ConfigDict()  # source=tfds: feature names in the TFDS dataset
    d.tfds.video_key = "video"  # video feature
    d.tfds.caption_key = "caption"  # caption feature
    d.tfds.motion_key = ""  # motion-score feature ("" = compute with stiv_jax.data.motion)
    d.shapes = ml_collections.ConfigDict()
    d.shapes.num_train = 100_000  # ShapesBench index space for training (procedural)
    d.shapes.heldout_seed = 1_000_003  # seed offset of the held-out evaluation split
    d.shapes.textured = True  # allow textured backgrounds
    d.shapes.camera_pan = True  # allow camera pans
    d.shapes.motion_interval = 2  # frame interval of the motion score for short clips
    # Direction drill (stage=drill): one fast object in one of 8 directions, plain, start
    # independent of the direction: only the caption tells the direction (docs/quality.md §9).
    d.shapes.drill = False  # direction drill clips only (set by stage=drill)
    d.shapes.drill_share = 0.0  # share of training clips drawn from the drill (0 = none)
    d.shapes.drill_objects = 1  # objects per drill clip: 2 = binding drill, distinct directions
    # Binding drill: starts where either object could take either direction, so only the
    # caption says which object moves which way (docs/quality.md §21).
    d.shapes.drill_swappable = False
    # Speeds of the drill's objects: "fast" (§9), or "slow,medium,fast" (the mix's speeds, so
    # the motion score varies in the drill as in the mix; docs/quality.md §23).
    d.shapes.drill_speeds = "fast"
    # Share of binding-drill clips whose two objects take one direction at two speeds (all
    # three speeds), so only the words say which is fast (docs/quality.md §34.6).
    d.shapes.speed_binding = 0.0
    # Share of the mix's drill clips that are one-object clips at every speed, so only the
    # words and the motion score say how far it goes (docs/quality.md §37.4).
    d.shapes.speed_drill = 0.0
    d.shapes.drill_t2v = 0.0  # share of text-only (T2V) clips in a prelude's drill (0 = none)
    # Share of training clips whose objects start where their track fits in every direction
    # (still camera), so the start does not hint at the direction (docs/quality.md §19).
    d.shapes.free_start = 0.0  # share of training clips with direction-free starts (0 = none)
    # Training caption phrasings drawn from: the first N of captions.TRAIN_TEMPLATES (3 = the
    # original ones; more add paraphrases, none in the held-out phrasings; docs/quality.md §38).
    d.shapes.templates = 3
    # Samples given a frame train on their scene in one of the first N training phrasings
    # (0: off; the drill keeps its own; docs/quality.md §39).
    d.shapes.given_templates = 0
    d.shapes.bg_drop = 0.0  # share of training captions without the background phrase
    d.shapes.bg_drop_tasks = "all"  # all | given: drop it only where a frame is given

    # ---------------------------------------------------------------- diffusion
    f = c.diffusion = ml_collections.ConfigDict()
    f.timestep_sampling = "logit_normal"  # logit_normal | uniform
    # S: JiT's law for x-prediction (Li & He 2025), t = sigmoid(-0.8 + 0.8 n): the v-loss
    # weight 1/(1 - t)^2 of x-prediction makes rare near-clean draws dominate small batches
    # (docs/quality.md); the structure and motion are decided at the noisy end.
    f.logit_mean = -0.8 if demo else 0.0  # logit-normal mean (negative: favours noisier t)
    f.logit_std = 0.8 if demo else 1.0  # logit-normal std
    # A share of the draws from a noise-heavy law, where only the caption tells the motion
    # (docs/quality.md §11): keeps a drill's direction reading trained in the main mix.
    f.noisy_share = 0.0  # share of training t drawn from noisy_law instead (0 = none)
    f.noisy_law = DRILL_LAW  # logit-normal (mean, std) of those draws: the drill's law
    f.motion_weight = 0.0  # loss weight 1 + w on latent pixels that change over the clip
    f.input_perturb = 0.0  # DDPM-IP: the model's input noise ε + γ·ξ, the target ε's (0 = off)
    f.shift = 1.0  # resolution shift of the noise level (SD3); >1 spends more time near noise
    f.text_drop = 0.1  # probability to drop the text condition in training (for CFG)
    f.image_drop = 0.1  # probability to drop the image condition in training (for CFG)
    # Share of training samples whose caption reaches the model through its word pieces
    # alone (the encoder's token states zeroed; needs model.word_pieces): the phrasing-free
    # path must carry the words (docs/quality.md §38). 0 = off.
    f.states_drop = 0.0
    f.concat_noise = 0.05  # noise std added to given latents for channel_concat

    # ---------------------------------------------------------------- optimizer
    o = c.optim = ml_collections.ConfigDict()
    o.lr = 1e-3 if small else 1e-4  # peak learning rate
    o.warmup_steps = 50 if small else 1000  # linear warmup, then constant
    # S: 1,000 steps with the last 200 cooling down (docs/quality.md §14: video PSNR +0.4 dB,
    # motion control +0.04 over 800 constant steps, two seeds).
    o.decay_steps = 200 if demo else 0  # linear cool-down to 0 over the run's last steps (WSD)
    o.b1 = 0.9  # AdaFactor momentum
    o.b2 = 0.999  # AdaFactor second-moment decay
    o.clip_norm = 1.0  # global-norm gradient clip
    o.weight_decay = 0.0  # none, as in the paper
    o.ema_decay = 0.999 if small else 0.9999  # EMA of params
    # Paths look like "blocks/0/cross/q/kernel"; the first matching group wins.
    o.lr_groups = ""  # learning-rate scale per param group "REGEX:SCALE,..." (0 freezes; "": all 1)
    # Pull per param group toward the weights the run started from (init_from's), each step
    # lr · RATE of the way (L2-SP as decoupled weight decay; stiv_jax.optim.decay_toward_anchor).
    o.anchor_decay = ""  # "REGEX:RATE,..." (rate · lr < 1; "": none)

    # ---------------------------------------------------------------- train
    t = c.train = ml_collections.ConfigDict()
    t.steps = (
        1000 if demo else 360 if small else 400_000
    )  # total optimizer steps (S: the main job sets 870 after its drill, recipe below)
    t.log_every = 10  # metrics.jsonl / TensorBoard cadence
    t.ckpt_every = 200 if demo else 120 if small else 2000  # checkpoint cadence
    t.sample_every = 0 if small else 10_000  # periodic sample videos (0 = only at the end)
    t.max_to_keep = 3  # checkpoints kept
    t.unmasked_steps = (
        120 if small and not demo else 0
    )  # final steps with MaskDiT off (unmasked fine-tuning)
    t.seed = 0  # model init / step rng seed
    t.async_checkpoint = True  # Orbax async saves
    t.init_from = ""  # <workdir | workdir/checkpoints/N>[:params|ema]: start from its weights
    # Stages run before this one in the same command, "stage:steps" each (stiv_jax/stages.py).
    t.prelude = ()  # ("stage:steps", ...) run first; this run starts from the last one's EMA
    # After a binding drill in the prelude (drill_objects=2) the command samples it and stops
    # unless each object takes its own direction: swap effect >= bind_min (stiv_jax.binding,
    # docs/quality.md §24; bound drills measure +0.6 to +1.2, unbound ones ~0); <= 0: no check.
    t.bind_min = 0.3
    t.lora_rank = 0  # LoRA rank r (0 = train every weight); needs init_from (stiv_jax/lora.py)
    t.lora_alpha = 0.0  # LoRA scale alpha / r (0 = alpha = r)
    t.lora_targets = "attention,mlp"  # adapted kernels: attention and/or mlp
    # A NaN/inf loss or gradient never reaches the state (checked on device every step).
    t.nonfinite = "abort"  # abort (one line naming the step) | skip (drop the update, count it)
    t.allow_model_change = False  # resume a checkpoint whose model config differs (else refuse)

    # ---------------------------------------------------------------- mesh
    h = c.mesh = ml_collections.ConfigDict()
    h.data = -1  # data parallel axis (-1 fills the remaining devices)
    h.fsdp = 1  # parameter + batch sharding axis
    h.context = 1  # frames (spatial attn) / tokens (temporal attn) axis
    h.tensor = 1  # heads / MLP axis
    h.dcn_data = -1  # multi-slice: slices the data axis spans over DCN (-1 = all slices)

    # ---------------------------------------------------------------- sampling
    s = c.sample = ml_collections.ConfigDict()
    s.steps = 25  # ODE steps
    s.solver = "euler"  # euler | heun
    s.shift = 1.0  # timestep-grid shift at sampling
    # S: 1.5, measured (docs/quality.md §14.6): a short run trains the null branch (both
    # conditions dropped) on ~1% of its samples; scale 4 breaks objects and shifts colours,
    # and 2 pulls plain backgrounds toward the caption's colour words (video PSNR -0.3 dB).
    s.cfg_scale = 1.5 if demo else 4.0  # joint image-text guidance scale
    # Scale for requests that give frames (TI2V, prediction, keyframes): < 0 = cfg_scale.
    # docs/quality.md §23: with a frame given, a trained S needs no guidance.
    s.cfg_scale_given = -1.0
    # Emu Video's factorisation (Girdhar et al. 2023), docs/quality.md §29: twice the
    # sampler's work for text-only requests.
    s.t2v_image_first = False  # text-only: sampled twice, the 1st pass's frame 0 given to the 2nd
    # docs/quality.md §33.3: the model's own implicit classifier (stiv_jax/candidates.py).
    s.t2v_candidates = 1  # text-only: N 1st passes, the best by caption score kept (1 = off)
    s.t2v_score_levels = (0.2, 0.4, 0.6)  # noise levels t of that caption score (0 noise, 1 data)
    # docs/quality.md §35.3: the same score for requests that give frames, on the frames
    # they do not give (the given frames kept in its null branch).
    s.ti2v_candidates = 1  # frame-giving: N samples, the best by caption score kept (1 = off)
    s.cfg_mode = "joint"  # joint (one batched forward) | separate (3-pass, text/image scales)
    s.cfg_text = 4.0  # text scale for cfg_mode=separate
    s.cfg_image = 2.0  # image scale for cfg_mode=separate
    # Kynkäänniemi et al. 2024; the conditional velocity outside the interval.
    s.cfg_interval = (0.0, 1.0)  # guide only where lo <= t < hi (t: 0 noise -> 1 data; all: (0, 1))
    s.cfg_renorm = True  # CFG renormalisation (off: plain CFG)
    s.cfg_renorm_mode = "scale_down"  # scale_down (norm <= conditional) | rescale (STIV: = it)
    s.use_ema = True  # sample with EMA weights
    s.fps = 8  # fps of written MP4s
    s.num_train_samples = 4  # videos written by the trainer's periodic sampling
    s.batch_size = 4  # prompts per sampler batch
    s.motion_score = 2.0  # motion score for prompts that give none
    s.long_overlap = 0  # long_mode=extend: frames carried into the next chunk (0 = predict task's)
    # Step cache (stiv_jax/step_cache.py, docs/sampling_speed.md): reuse the later blocks'
    # residual while the first block's residual changes by < cache_threshold (relative).
    s.step_cache = False  # first-block step cache (docs/sampling_speed.md); off: all blocks run
    s.cache_threshold = 0.2  # relative mean-abs change of the first block's residual (S: 2.1x)
    # Pods (docs/scale_out.md): shard params over config.mesh like training (FSDP/tensor) and
    # the prompts over data x fsdp; every process then runs every batch (lockstep).
    s.shard_params = False  # params over config.mesh (pods); off: a full copy per process
    s.param_dtype = "auto"  # kernels stored in: auto (= model.dtype; exact) | float32 | bfloat16
    # For prompt files from other people (see README "Trust model").
    s.images_root = ""  # condition images must lie under this dir ("" = any readable path)

    # ---------------------------------------------------------------- encoders
    e = c.text_encoder = ml_collections.ConfigDict()
    e.name = "minilm" if small else "t5"  # minilm (embedded) | t5 | umt5 | clip
    e.path = ""  # checkpoint dir ("" = the packaged MiniLM-L6)
    # Token length L (padded / truncated; truncation is warned). Small: 48 covers every
    # ShapesBench caption (longest 42 MiniLM tokens; 32 cut 14% of the held-out captions).
    e.max_length = 48 if small else 128
    e.pooled_path = ""  # optional second encoder (e.g. CLIP) for the pooled vector
    e.word_bag = word_bag  # hashed word-piece buckets added to the pooled vector (0 = off)
    e.word_pieces = word_pieces  # > 0: token states gain a word-piece id channel (model's)
    e.cache_size = 4096  # LRU of encoded prompts (training captions repeat)
    e.chunk_size = 64  # prompts per encoder forward (each chunk padded to a power of two)
    e.dtype = "float32"  # encoder compute dtype

    a = c.autoencoder = ml_collections.ConfigDict()
    a.name = "pixel" if small else "sd_vae"  # pixel (identity) | sd_vae | wan
    a.path = ""  # checkpoint dir for real VAEs
    a.dtype = "float32"  # VAE compute dtype
    a.param_dtype = "float32"  # VAE parameter storage dtype
    a.chunk = 8  # sd_vae: frames per jitted encode/decode call (bounds memory)
    # Real VAEs: set model.in_channels to 4 (sd_vae) or 16 (wan); wan needs frames = 1 + 4k.

    stage = args.get("stage")
    if stage is not None:
        if stage not in STAGES:
            raise ValueError(
                f"config argument stage={stage!r} is unknown; expected one of {STAGES}"
            )
        apply_stage(c, stage, frames=int(args.get("frames", 1)))
    recipe = args.get("recipe", "main")
    if recipe not in RECIPES:
        raise ValueError(f"config argument recipe={recipe!r} is unknown; expected one of {RECIPES}")
    if recipe == "long" and (not demo or stage is not None):
        raise ValueError(
            f"config argument recipe=long is S's full-mix recipe; got variant={m.variant}"
            f"{f' with stage={stage}' if stage is not None else ''}"
        )
    if demo and stage is None:
        # docs/quality.md §22-25: the binding drill first (two swappable objects; the words
        # reach each object's colour word through the word pieces, key_shift lets its video
        # tokens push their keys along the direction), then the mix with 30% of its clips.
        d.shapes.drill_objects, d.shapes.drill_swappable = 2, True
        m.key_shift = True
        m.word_pieces_zero_init = False  # xavier: binds sooner than zero-init (§24.2)
        word_pieces.set(1024)  # the model's path and the encoder's id channel (tied)
        d.shapes.drill_share = 0.3  # keeps the drill's clips in the mix (§11.2)
        f.noisy_share = 0.3  # and its noise law for 30% of the draws (§11.2)
        # §23.2, §25: with a frame given these models need no guidance (PSNR and motion up).
        s.cfg_scale_given = 1.0
        # §28.4: 2 heads of 64 instead of S's 4 of 32: the step 10% shorter, level at equal
        # steps (the main job spends it on 170 more steps of the mix).
        m.heads = 2
        # §29.1: RoPE base 100 instead of 10,000: on an 8×8 grid of 4 frames most of
        # 10,000's frequencies barely turn; TI2V direction up in both seeds.
        m.rope_theta = 100.0
        # §29.2: text-only requests sampled image first: T2V direction within one
        # sector and consistency up on all four models measured.
        s.t2v_image_first = True
        # §31.2: its first pass (no frame) guided at 3 while t < 0.4 (the layout), not
        # after: T2V direction up on both seeds, 16 and 48 cases.
        s.cfg_scale, s.cfg_interval = 3.0, (0.0, 0.4)
        # §33.3: its first pass sampled 4 times, the frame the model's own caption score
        # rates best kept: T2V direction up on both seeds (48 cases).
        s.t2v_candidates = 4
        if recipe == "main":  # §25, §28.4: 1,000 drill steps, then 870 of the mix (~14 min)
            t.prelude, t.steps = ("drill:1000",), 870
            t.bind_min = 0.0  # the main job always finishes; evaluate says what it learned
        else:  # §22.3, §24.3, §41: the same levers, 3,000 drill steps and 9,000 of the mix
            t.prelude = ("drill:3000",)
            t.steps, o.decay_steps, t.ckpt_every = 9000, 1800, 1000
    if "runlocal" in args:
        t.steps, t.log_every, t.ckpt_every = 20, 5, 10
        t.prelude = tuple(f"{entry.split(':')[0]}:10" for entry in t.prelude)
        o.decay_steps = 0
        d.batch_size = 2
    get_image_cond(m.image_cond)  # one clear error for an unknown method
    return c
