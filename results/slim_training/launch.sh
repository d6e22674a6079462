#!/bin/sh
cd "$(dirname "$0")/../.."
exec python3 -m bench.cli train refine --images ../shared/corpus/images --steps 100000 \
  --out runs/train_slim --exclude-list runs/train_slim/exclude.txt \
  --val-images lomiri16__life_by_aitzol_berasategi.jpg,opensfm__berlin_02.jpg,plasma__kite.jpg \
  --val-every 250 --batch 4 --lr 4e-4 --patches-per-square 4 --threads 1 --max-minutes 118 \
  --seed 0 --no-progress "$@"
