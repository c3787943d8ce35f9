#!/usr/bin/env bash
# Everything in the training path that needs a GPU, in one command, ending with a pass/fail table.
#
#   scripts/gpu_smoke.sh /path/to/Qwen2.5-VL-3B-Instruct     # a local 2B/3B stand-in (no hub access needed)
#
# Checks: 1 bf16 + flash-attention-2 forward with a video; 2 ZeRO-3 on 1 GPU, 2 GRPO steps through the
# real train stage (accelerate launch), checkpoint + resume included; 3 the same with vLLM rollouts
# (SKIP when vLLM is not installed); 4 HF vs vLLM reward distributions (benchmarks/rollout_compare.py);
# 5 seconds per step, HF generate vs vLLM (benchmarks/grpo_step.py --vllm).
# Never run in CI: the CPU test suite covers the same code paths without CUDA.
set -u
MODEL=${1:?usage: scripts/gpu_smoke.sh MODEL_DIR}
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WORK=$(mktemp -d)
declare -A RESULT

check() {  # name, command...
  local name=$1; shift
  echo "=== $name: $*" >&2
  if "$@" >"$WORK/$name.log" 2>&1; then RESULT[$name]=PASS
  elif grep -q "SKIP:" "$WORK/$name.log"; then RESULT[$name]="SKIP ($(grep -o 'SKIP:.*' "$WORK/$name.log" | head -1))"
  else RESULT[$name]="FAIL (see $WORK/$name.log)"; fi
}

# Toy RIQ records and frames (synthetic videos through the real ffmpeg chain); the policy is $MODEL.
$PY -c "import sys; sys.path[:0]=['.','tests']; from train_chain import build_chain; from pathlib import Path; build_chain(Path('$WORK/chain'))" >/dev/null 2>&1
cat >"$WORK/p.yaml" <<YAML
model: {attn_implementation: flash_attention_2}
train: {max_steps: 2, num_generations: 2, per_device_train_batch_size: 2, max_completion_length: 64, bf16: true,
        gradient_checkpointing: true, freeze_vision_tower: true, checkpoint_steps: 1, launch: {deepspeed: zero3}}
YAML
sed 's/checkpoint_steps: 1,/checkpoint_steps: 1, use_vllm: true, vllm_gpu_memory_utilization: 0.3,/' "$WORK/p.yaml" >"$WORK/pv.yaml"
STAGE=(-m stages.train --model "$MODEL" --riq "$WORK/chain/riq/train.jsonl" --checkpoints "$WORK/ckpt")

check bf16_flash_attn_forward $PY - "$MODEL" "$WORK/chain" <<'PY'
import sys, glob, torch
sys.path.insert(0, ".")
from pipeline.core.frames_cache import load_frames
from pipeline.model.video_inputs import batch_inputs, load_policy, prompt_text
import importlib.util
if importlib.util.find_spec("flash_attn") is None:
    print("SKIP: flash-attn not installed"); sys.exit(1)
model, proc = load_policy(sys.argv[1], dtype=torch.bfloat16, attn_implementation="flash_attention_2", device_map="cuda")
video = load_frames(sorted(glob.glob(sys.argv[2] + "/frames/*.npz"))[0])
batch = batch_inputs(proc, [prompt_text(proc, "the red circle moves left")], [video]).to("cuda")
with torch.no_grad():
    logits = model(**batch).logits
assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
print("ok", tuple(logits.shape))
PY
check zero3_1gpu_train_and_resume $PY "${STAGE[@]}" --out "$WORK/out" --live "$WORK/live" --params "$WORK/p.yaml"
if $PY -c "import vllm" 2>/dev/null; then
  check vllm_rollout_train $PY "${STAGE[@]}" --out "$WORK/outv" --live "$WORK/livev" --params "$WORK/pv.yaml"
  check vllm_reward_distribution $PY benchmarks/rollout_compare.py --model "$MODEL" --riq "$WORK/chain/riq/train.jsonl" --params "$WORK/p.yaml" --prompts 8
  check grpo_step_hf_vs_vllm $PY benchmarks/grpo_step.py --model "$MODEL" --riq "$WORK/chain/riq/train.jsonl" --params "$WORK/p.yaml" --vllm --steps 3
else
  for c in vllm_rollout_train vllm_reward_distribution grpo_step_hf_vs_vllm; do RESULT[$c]="SKIP (vLLM not installed)"; done
fi

printf '\n%-32s %s\n' CHECK RESULT
for c in bf16_flash_attn_forward zero3_1gpu_train_and_resume vllm_rollout_train vllm_reward_distribution grpo_step_hf_vs_vllm; do
  printf '%-32s %s\n' "$c" "${RESULT[$c]:-not run}"
done
! printf '%s\n' "${RESULT[@]}" | grep -q FAIL
