#!/bin/bash
# One prepared device run: the gpu profile's whole report, then BNext-T train throughput (224x224, batch 128).
# usage: bash .gpurun/run.sh <commit> <report timeout s> <speed timeout s>
commit=$1; report_s=$2; speed_s=$3
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 BNEXT_COMMIT=$commit MPLBACKEND=Agg
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; free -g | head -2
  python3 -c "import torch, timm, papermill; print('torch', torch.__version__, 'timm', timm.__version__, 'papermill', papermill.__version__)"; } > $OUT/machine.txt 2>&1
cat $OUT/machine.txt
echo "setup $(( $(date +%s) - t0 )) s"
if [ "$report_s" -gt 0 ]; then
  t1=$(date +%s)
  timeout "$report_s" python3 -m bnext_lib.report --profile gpu --out reports/gpu --no-html >> $OUT/report.log 2>&1
  echo "report rc=$? in $(( $(date +%s) - t1 )) s"
  grep -E "^== |training [0-9]+ of|report:|wrote|Error|error" $OUT/report.log | tail -25
  tar czf $OUT/report.tgz reports/gpu
  tar czf $OUT/runs.tgz --exclude='*.pt' --exclude='*.pt.tmp*' data/runs 2>/dev/null
fi
if [ "$speed_s" -gt 0 ]; then
  t2=$(date +%s)
  timeout "$speed_s" python3 benchmarks/train_speed.py bnext_tiny --size 224 --in-chans 3 --batch 128 \
    --num-classes 1000 --device cuda --official-src .official --amp --compile bf16 --modes train --steps 8 \
    --warmup 2 > $OUT/train_speed.log 2>&1
  echo "speed rc=$? in $(( $(date +%s) - t2 )) s"
  grep -v Warning $OUT/train_speed.log | tail -8
fi
echo "total $(( $(date +%s) - t0 )) s"
