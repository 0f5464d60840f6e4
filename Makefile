# siqa: `make demo` runs the whole pipeline on built-in demo data; `make test` runs the tests.
# Every target creates ./.venv on first use. Override paths: make features DATA=/path/to/SeIQA CONFIG=configs/default.toml
VENV   ?= .venv
PY     := $(VENV)/bin/python
SIQA   := $(VENV)/bin/siqa
DATA   ?= demo/data
STORE  ?= store
RUN    ?= runs/latest
CONFIG ?= configs/default.toml
QUERY  ?= SELECT split, count(*) AS pairs, avg(label) AS mean_label FROM pairs GROUP BY split ORDER BY split
PYTEST_ARGS ?=

.PHONY: venv features oof submit sql demo test bench bench-gpu bench-gpu-models bench-gpu-lora clean

venv: $(VENV)/.installed

# torch is installed first and pinned so that no resolver swaps in another build.
# opencv-python (GUI, needs libGL) and opencv-python-headless share the cv2 folder: rapidocr-onnxruntime
# requires the GUI one, so it is removed and the headless one reinstalled over it (same cv2 API).
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	$(VENV)/bin/pip install -q -e '.[test]'
	$(VENV)/bin/pip uninstall -q -y opencv-python
	$(VENV)/bin/pip install -q --force-reinstall --no-deps 'opencv-python-headless>=4.8,<5'
	$(PY) -c "import cv2, rapidocr_onnxruntime; cv2.CascadeClassifier(cv2.data.haarcascades + 'haarcascade_frontalface_default.xml')"
	touch $@

features: venv
	$(SIQA) features --data $(DATA) --store $(STORE) --config $(CONFIG)

oof: venv
	$(SIQA) oof --store $(STORE) --run $(RUN) --config $(CONFIG)

submit: venv
	$(SIQA) submit --run $(RUN)

sql: venv
	$(SIQA) sql --store $(STORE) "$(QUERY)"

demo: venv
	$(SIQA) demo-data --out demo/data
	$(SIQA) features --data demo/data --store demo/store --config configs/offline.toml
	$(SIQA) oof --store demo/store --run runs/demo --config configs/offline.toml --preset fast
	$(SIQA) submit --run runs/demo --out runs/demo/submission.zip
	@cat runs/demo/leaderboard.csv
	@echo "runs/latest -> runs/demo (store demo/store): try  $(SIQA) sql \"SELECT * FROM feature_srocc LIMIT 10\""

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: venv
	$(PY) bench/run_all.py

# the default feature set end to end on 750 SeIQA-size pairs (random weights of the real sizes, nothing
# downloaded): pairs/s, seconds per extractor, GPU busy fraction, peak memory; --cpu --tiny checks it on a CPU
bench-gpu: venv
	$(PY) bench/bench_gpu_pipeline.py --out bench/results/bench_gpu_pipeline.json

# throughput of single networks (CLIP, DINOv2, Qwen2.5-VL-7B) on ready batches and as extractors
bench-gpu-models: venv
	$(PY) bench/bench_gpu.py

# the vlm_lora fine-tune alone (Qwen3-VL-4B size, bf16, LoRA 64, batch 16, 448x448 pairs); --tiny checks it on a CPU
bench-gpu-lora: venv
	$(PY) bench/bench_gpu_vlm_lora.py --out bench/results/bench_gpu_vlm_lora.json

clean:
	rm -rf demo runs store
