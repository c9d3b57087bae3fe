python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 || exit
nvidia-smi --query-gpu=name --format=csv,noheader
mkdir -p /tmp/demo
timeout 420 bash scripts/make_demo_checkpoints.sh /tmp/demo "python3 -m vrlhf.cli" data/demo/captioner > /tmp/demo/data.log 2>&1; echo rc=$?
for t in captioner colorizer; do tr '\r' '\n' < /tmp/demo/$t.log | grep -v "it/s\]$\|s/it\]$" | tail -25 > $OUT/$t.log; tr '\r' '\n' < /tmp/demo/$t.log | grep "it/s\]$" | tail -1 >> $OUT/$t.log; done
cd /tmp/demo && tar czf $OUT/ckpts.tar.gz captioner colorizer && ls -la $OUT
