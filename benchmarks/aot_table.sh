#!/bin/bash
# The README's AOT table: every paper size on a v5p and a v6e slice (batch 256, 20 frames,
# full FSDP), one compile at a time; a finished JSON is not redone, so the script resumes.
# A configuration over HBM is recorded as "does not fit" (M/2 512² on v6e:8x8; hence the
# 256-chip v6e:16x16 line).
# Then one guided ODE step of the sampler (8 prompts, CFG 16, params sharded in their
# sampling dtype, full FSDP) of every size on small v5e / v6e / v5p slices (--sampler table).
#   bash benchmarks/aot_table.sh [OUT_DIR] [sampler]   (then: python benchmarks/aot_table.py
#   [--sampler] OUT_DIR); "sampler" skips the train-step compiles
set -u
out=${1:-runs/aot}
mkdir -p "$out"
[ "${2:-}" = sampler ] || for job in "XXL/2 512 v5p:4x4x4" "M/2 512 v5p:4x4x4" "XL/2 256 v6e:8x8" "XXL/2 256 v6e:8x8" \
           "M/2 256 v6e:8x8" "XL/2 512 v6e:8x8" "XXL/2 512 v6e:8x8" "M/2 512 v6e:8x8" \
           "XL/2 256 v5p:4x4x4" "XXL/2 256 v5p:4x4x4" "M/2 256 v5p:4x4x4" "XL/2 512 v5p:4x4x4" \
           "M/2 512 v6e:16x16"; do
  read -r v r t <<< "$job"
  name="aot_${v/\//_}_${r}_${t/:/_}"
  [ -s "$out/$name.json" ] && continue
  echo "$(date -u +%T) $v ${r}² $t"
  python -m tpu_scripts.aot_compile --config "configs/stiv.py:variant=$v,res=$r,frames=20" \
      --topology "$t" --config.mesh.data=1 --config.mesh.fsdp=-1 \
      --json "$out/$name.json" > "$out/$name.log" 2>&1 || echo "  failed: see $out/$name.log"
done
for job in "XL/2 256 v5e:2x4" "XXL/2 256 v5e:2x4" "M/2 256 v5e:2x4" \
           "XL/2 256 v6e:2x4" "XXL/2 256 v6e:2x4" "M/2 256 v6e:2x4" \
           "XL/2 256 v5p:2x2x1" "XXL/2 256 v5p:2x2x1" "M/2 256 v5p:2x2x1"; do
  read -r v r t <<< "$job"
  name="aot_sample_${v/\//_}_${r}_${t/:/_}"
  [ -s "$out/$name.json" ] && continue
  echo "$(date -u +%T) sampler $v ${r}² $t"
  python -m tpu_scripts.aot_compile --config "configs/stiv.py:variant=$v,res=$r,frames=20" \
      --topology "$t" --sample --notrain --exact_cost=false --config.sample.batch_size=8 \
      --config.mesh.data=1 --config.mesh.fsdp=-1 \
      --json "$out/$name.json" > "$out/$name.log" 2>&1 || echo "  failed: see $out/$name.log"
done
