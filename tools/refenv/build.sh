#!/usr/bin/env bash
# Build a private virtualenv holding the official chatterbox-tts 0.1.7, used only to make parity
# fixtures and to run the live parity tests. nutq itself never imports it.
#
#   NUTQ_REFENV=/path bash tools/refenv/build.sh      (default: ~/.cache/nutq-refenv)
#
# Why the contortions: the official wheel pins torch 2.6 / torchaudio 2.6 / gradio, and PyPI has no
# CPU torchaudio. We keep the CPU torch 2.13.0 wheel, install the official wheel and s3tokenizer
# without their pins, and use torchaudio 2.11.0 with its compiled (CUDA-linked) libraries moved
# aside: everything the official code uses from torchaudio (kaldi fbank, Resample) is pure Python.
set -euo pipefail
REFENV="${NUTQ_REFENV:-${XDG_CACHE_HOME:-$HOME/.cache}/nutq-refenv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
mkdir -p "$REFENV/dl"
[ -x "$REFENV/venv/bin/python" ] || "$PY" -m venv "$REFENV/venv"
VPY="$REFENV/venv/bin/python"
PIN="$REFENV/pins.txt"
echo "torch==2.13.0" > "$PIN"

"$VPY" -m pip install -q torch==2.13.0
"$VPY" -m pip download -q --no-deps -d "$REFENV/dl" \
  chatterbox-tts==0.1.7 s3tokenizer==0.3.0 torchaudio==2.11.0
"$VPY" -m pip install -q -c "$PIN" --no-deps \
  "$REFENV"/dl/chatterbox_tts-0.1.7-*.whl "$REFENV"/dl/s3tokenizer-0.3.0-*.whl \
  "$REFENV"/dl/torchaudio-2.11.0-*.whl
SP="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$REFENV/torchaudio_libs_aside"
if ls "$SP"/torchaudio/lib/*.so >/dev/null 2>&1; then
  mv "$SP"/torchaudio/lib/*.so "$REFENV/torchaudio_libs_aside/"
fi
# The official package's runtime needs, at versions checked against CPU torch 2.13.0.
# setuptools<81 because resemble-perth still imports pkg_resources.
"$VPY" -m pip install -q -c "$PIN" \
  "numpy==1.26.4" "transformers==5.2.0" "tokenizers==0.22.2" "huggingface_hub==1.33.0" \
  "diffusers==0.29.0" "conformer==0.3.2" "safetensors==0.5.3" "librosa==0.11.0" \
  "resemble-perth==1.0.1" "pyloudnorm==0.2.0" "omegaconf==2.4.0" "einops==0.8.2" \
  "onnx==1.23.2" "scipy==1.17.1" "soundfile" "tqdm" "setuptools<81"
HF_HUB_OFFLINE=1 "$VPY" -c "from chatterbox.mtl_tts import ChatterboxMultilingualTTS; print('reference env ok')"
echo "$VPY"
