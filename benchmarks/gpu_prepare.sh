#!/usr/bin/env bash
# Prepare .whl/ for benchmarks/gpu_smoke.sh: everything the GPU machine lacks, as files.
#
# Run on a machine with PyPI access, in the repository root, with a Python that has torch
# installed (the project's .venv works: deepspeed's wheel is built against the torch present,
# with DS_BUILD_OPS=0, so its CUDA ops JIT-compile later on the GPU machine):
#
#     . .venv/bin/activate && bash benchmarks/gpu_prepare.sh
#
# The GPU machine (Python 3.12, torch 2.11+cu130, transformers 5.17, accelerate 1.15, pyarrow,
# typer, rich, pyyaml, ninja, nvcc; see /work/shared/gpu/README.md) lacks deepspeed, hjson,
# pydantic, msgspec and zstandard (typing-extensions travels too: pydantic 2.13 needs >= 4.14.1,
# and the image's version is not known). transformers and regex travel too, at the versions tested
# here, so the trainer runs on the same transformers as its CPU tests. .whl/ is git-ignored;
# the device call carries it: carry [".whl"].
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DS_VERSION=0.19.8
SHARED=${SHARED:-../shared}

grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
# One version of each package, or the install on the GPU machine stops: start clean
# (the deepspeed wheel is kept, it takes a minute to build).
find .whl -mindepth 1 -maxdepth 1 -type f -name '*.whl' ! -name "deepspeed-${DS_VERSION}-*" -delete

version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }

if ! ls .whl/deepspeed-${DS_VERSION}-*.whl >/dev/null 2>&1; then
    "$PY" -c "import torch" || { echo "needs torch in $PY (to build the deepspeed wheel)"; exit 1; }
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps --no-binary=:all: "deepspeed==${DS_VERSION}" -d "$tmp"
    DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation "$tmp"/deepspeed-${DS_VERSION}.tar.gz -w .whl
    rm -rf "$tmp"
fi

P="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $P -d .whl \
    hjson pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 "typing-inspection==$(version typing-inspection)" \
    "typing-extensions==$(version typing-extensions)" \
    "msgspec==$(version msgspec)" "zstandard==$(version zstandard)" \
    "transformers==$(version transformers)" "regex==$(version regex)"

# The project itself (oasst_data, oasst_data_cli, the packaged presets and ZeRO-2 config).
"$PY" -m pip wheel -q --no-deps . -w .whl

# The real Pythia tokenizer (the GPU machine has no ../shared): the benchmark builds with it.
rm -rf .whl/tokenizer-gpt-neox-20b
cp -r "$SHARED/tokenizers/gpt-neox-20b" .whl/tokenizer-gpt-neox-20b

# Modules the build, the CLI and the trainer import that neither the GPU image nor .whl/ has.
"$PY" - <<'PYCODE'
import importlib.metadata as md, pathlib, sys
import oasst_data_cli.app, oasst_data.shards.build, oasst_data.readers.files, oasst_data.readers.oasst  # noqa: F401
import oasst_data.train.run, oasst_data.train.trainer, oasst_data.train.model, oasst_data.train.collator  # noqa: F401
image = set("""accelerate aiohttp annotated-doc anyio attrs certifi charset-normalizer click einops filelock fsspec h11
hf-xet httpcore httpx huggingface-hub idna jinja2 markdown-it-py markupsafe mdurl mpmath msgpack networkx ninja numpy
nvidia-ml-py packaging pandas pillow protobuf psutil py-cpuinfo pyarrow pygments python-dateutil pyyaml regex
requests rich safetensors setuptools shellingham six sympy tokenizers torch tqdm transformers triton typer
typing-extensions urllib3 xxhash""".split())
carried = {p.name.split("-")[0].lower().replace("_", "-") for p in pathlib.Path(".whl").glob("*.whl")}
owners = md.packages_distributions()
needed = {d.lower().replace("_", "-") for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}
optional = {"isal", "datasets", "dill", "multiprocess", "httpx2", "httpcore2", "truststore", "oasst-data"}
missing = sorted(needed - image - carried - optional)
print("imported but neither on the GPU image nor carried:", missing or "none")
PYCODE
du -sh .whl
ls -1 .whl
