#!/usr/bin/env bash
# Installs everything medhash needs on a fresh Debian 12 machine (idempotent): Debian's PyTorch
# stack for the model side (and CharLS, libcharls2, which it reads DICOM JPEG-LS with; JPEG 2000
# is Pillow's), Debian's Rust + binaryen for the WebAssembly kernel, Chromium and software
# Vulkan (browser and WebGPU tests), and the npm
# packages (Node 22 comes as the `node` devDependency). onnxruntime-node's install script would
# download CUDA binaries from outside the npm registry, so it is skipped: its CPU build ships inside.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3-torch python3-torchvision python3-onnx python3-numpy python3-pil libcharls2 python3-sklearn
  python3-scipy python3-pytest python3-matplotlib rustc cargo libstd-rust-dev-wasm32 binaryen
  chromium mesa-vulkan-drivers libvulkan1)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install: apt packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm ci only when the lock changed since the last install (it wipes node_modules). A checkout
# whose node_modules is a link (a git worktree sharing another checkout's install) leaves it
# alone: npm ci would empty the shared folder through the link, under every checkout using it.
stamp=node_modules/.medhash-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ -L node_modules ]; then
  echo "install: node_modules links to $(readlink node_modules); not reinstalling a shared install" >&2
elif [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "install: npm ci" >&2
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --onnxruntime-node-install=skip --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
echo "install: ok ($(npx node --version), $(/usr/bin/python3 -c 'import torch; print("torch", torch.__version__)'))" >&2
