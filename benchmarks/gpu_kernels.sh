#!/usr/bin/env bash
# Everything that decides the low-bit kernel design, in one run on a GPU (<= 9 minutes on an H100/H200):
#   1. correctness of both kernel families: every width x scale variant x odd and ViT shapes x M = 1..33
#   2. the streaming-read floor, cuBLAS fp16, classic vs streaming kernel (two slab sizes) on
#      8192 x 8192 and 8192 x 28672, W2/W3/W4/W8, M = 1 and 16 (the goals), then 28672 x 8192
#   3. the small ViT-B shapes (launch-bound on a big GPU)
#   4. the GPU pytest checks of the streaming kernel (pycuda path of both families, CUDA-graph capture and
#      module swap with EDGEINF_KERNEL=stream, odd shapes)
# Each part runs under its own timeout and writes its own JSON; a failing part does not stop the
# others. The parts are merged into benchmarks/results/kernels-<gpu>.json (and copied to $OUT if set).
# Run from anywhere:  bash benchmarks/gpu_kernels.sh
python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpuwheels/*.whl && export PYTHONPATH=/tmp/site
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
START=$(date +%s)
PARTS=/tmp/edgeinf-gpu-parts
rm -rf "$PARTS" /tmp/edgeinf-src && mkdir -p "$PARTS" /tmp/edgeinf-src
# the installed layout (edgeinf.kernels = kernels/, ...) without building a wheel
cp -r edgeinf /tmp/edgeinf-src/edgeinf && cp -r kernels /tmp/edgeinf-src/edgeinf/kernels \
  && cp -r exporters /tmp/edgeinf-src/edgeinf/exporters && cp -r boards /tmp/edgeinf-src/edgeinf/boards
export PYTHONPATH=/tmp/edgeinf-src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export EDGEINF_CACHE=${EDGEINF_CACHE:-/tmp/edgeinf-cache}

part() {  # part NAME TIMEOUT_S COMMAND...: run one part, record its exit status and seconds
  local name=$1 limit=$2 t0=$(date +%s)
  shift 2
  echo "== $name (limit ${limit}s)" >&2
  (cd /tmp && timeout "$limit" "$@") > "$PARTS/$name.log" 2>&1  # not the checkout: its edgeinf/ lacks kernels/
  local rc=$?
  echo "{\"part\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}" > "$PARTS/$name.status.json"
  tail -n 25 "$PARTS/$name.log" >&2
}

ARCH=$(python3 -c "import torch; print('sm_%d%d' % torch.cuda.get_device_capability())")
export EDGEINF_GPU_NAME=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))" 2>/dev/null || echo unknown-gpu)
part build 150 python3 -m edgeinf.kernels.build --arch "$ARCH"
part correctness 120 python3 "$ROOT/benchmarks/bench_kernels.py" --correctness --families classic stream \
  --out "$PARTS/correctness.json"
part large 270 python3 "$ROOT/benchmarks/bench_kernels.py" --shapes 8192x8192 8192x28672 --bits 2 3 4 8 --ms 1 16 \
  --families classic stream stream@slab65536 classic+EDGEINF_MIN_BLOCKS=2+EDGEINF_LOP3_DEQUANT \
  --out "$PARTS/large.json"
part vit 60 python3 "$ROOT/benchmarks/bench_kernels.py" --vit --bits 2 4 8 --ms 1 16 --families classic stream \
  --out "$PARTS/vit.json"
part pytest 60 env EDGEINF_KERNEL=stream python3 -m pytest -q -p no:cacheprovider "$ROOT/tests/test_kernels_gpu.py" \
  -k "numpy_path or cuda_graph or quantize_linear_modules or (stream and (300-13 or 1000-257 or 70-520 or 257-1))"
if [ $(( $(date +%s) - START )) -lt 420 ]; then
  part large2 $(( 530 - ($(date +%s) - START) )) python3 "$ROOT/benchmarks/bench_kernels.py" --shapes 28672x8192 \
    --bits 2 4 8 --ms 1 16 --families classic stream --out "$PARTS/large2.json"
fi

python3 - "$PARTS" "$ROOT" <<'PY'
import glob, json, os, re, shutil, sys, time
parts, root = sys.argv[1], sys.argv[2]
res = {"script": "benchmarks/gpu_kernels.sh", "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
       "device": os.environ.get("EDGEINF_GPU_NAME") or None, "parts": {}}
for status in sorted(glob.glob(f"{parts}/*.status.json")):
    st = json.load(open(status))
    name = st["part"]
    data = f"{parts}/{name}.json"
    if os.path.exists(data):
        st["result"] = json.load(open(data))
        res["device"] = res["device"] or st["result"].get("device")
    st["log_tail"] = open(f"{parts}/{name}.log", errors="replace").read()[-3000:]
    res["parts"][name] = st
gpu = re.sub(r"[^a-z0-9]+", "-", (res.get("device") or "unknown-gpu").lower()).strip("-")
out = f"{root}/benchmarks/results/kernels-{gpu}.json"
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(res, f, indent=1)
os.replace(tmp, out)
print(f"wrote {out}", file=sys.stderr)
if os.environ.get("OUT"):
    shutil.copy(out, os.environ["OUT"])
    for log in glob.glob(f"{parts}/*.log"):
        shutil.copy(log, os.environ["OUT"])
PY
echo "total $(( $(date +%s) - START )) s" >&2
