#!/usr/bin/env bash
# Starts a vLLM server (OpenAI-compatible API) on CPU from .venv-vllm (scripts/vllm_venv.sh) in the background, waits
# until it answers, and writes its PID; the spacy_fsner.VLLM.v1 model talks to it (docs/scaling.md). Float32, eager
# (starts in ~35 s; compiled takes ~130 s), prefix caching on, and LoRA with a free slot beside each adapter (on
# CPU a batch that mixes base and LoRA requests with max_loras=1 gives the base requests the adapter's output).
#
# Usage: scripts/vllm_server.sh MODEL_DIR [--port P] [--name NAME] [--lora NAME=ADAPTER_DIR]... [--pid-file F]
#        [--log F] [--wait SECONDS]
# Stop it with: kill "$(cat PID_FILE)"   (the default PID file is .vllm-server.pid, the log .vllm-server.log)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '6,8p' "$0" | sed 's/^# //'; exit 2; }
model="$1"; shift
port=8000; name=""; loras=(); pid_file=.vllm-server.pid; log=.vllm-server.log; wait_s=600
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port="$2"; shift 2 ;;
        --name) name="$2"; shift 2 ;;
        --lora) loras+=("$2"); shift 2 ;;
        --pid-file) pid_file="$2"; shift 2 ;;
        --log) log="$2"; shift 2 ;;
        --wait) wait_s="$2"; shift 2 ;;
        *) echo "vllm_server.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
python=.venv-vllm/bin/python
[ -x "$python" ] || { echo "vllm_server.sh: no $python; create it with scripts/vllm_venv.sh" >&2; exit 1; }
[ -e "$model" ] || { echo "vllm_server.sh: no model at $model (a Hugging Face model directory)" >&2; exit 1; }
args=(--model "$model" --host 127.0.0.1 --port "$port" --max-model-len 2048 --dtype float32 --enforce-eager
      --enable-prefix-caching)
[ -n "$name" ] && args+=(--served-model-name "$name")
if [ ${#loras[@]} -gt 0 ]; then
    rank=8
    for lora in "${loras[@]}"; do  # --max-lora-rank must cover every adapter's rank
        r=$("$python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["r"])' "${lora#*=}/adapter_config.json")
        [ "$r" -gt "$rank" ] && rank=$r
    done
    args+=(--enable-lora --max-loras $((${#loras[@]} + 1)) --max-lora-rank "$rank" --lora-modules "${loras[@]}")
fi
# the KV cache in GiB of CPU memory (vLLM's default takes far more than a test needs)
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}"
nohup "$python" -m vllm.entrypoints.openai.api_server "${args[@]}" >"$log" 2>&1 &
pid=$!
echo "$pid" >"$pid_file"
for _ in $(seq "$wait_s"); do
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "vllm_server.sh: the server exited; the end of $log:" >&2; tail -20 "$log" >&2; exit 1
    fi
    if "$python" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
        "http://127.0.0.1:$port/v1/models" 2>/dev/null; then
        echo "vLLM server ready at http://127.0.0.1:$port (PID $pid in $pid_file, log $log)"
        exit 0
    fi
    sleep 1
done
echo "vllm_server.sh: no answer after $wait_s s; stopping it (log: $log)" >&2
kill "$pid"
exit 1
