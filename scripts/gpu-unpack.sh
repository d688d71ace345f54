# Sourced by the scripts that run on a lent GPU machine (gpu-check.sh, gpu-speed.sh): installs
# the Vulkan loader packages of .gl/, points Vulkan at the NVIDIA driver, writes nvidia-smi's
# report to $OUT/nvidia-smi.txt, unpacks the binaries that scripts/gpu-prepare.sh packed into
# $GPU_BIN (/tmp/gpu-bin) and the datasets of .gpu/*.tar.gz into ../shared/data.
# Needs $OUT; run from the repository root.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
fi
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
GPU_BIN=/tmp/gpu-bin
mkdir -p "$GPU_BIN"
for f in .gpu/bin/*.xz; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$f" "$GPU_BIN/$(basename "$f" .xz)"
  chmod +x "$GPU_BIN/$(basename "$f" .xz)"
done
mkdir -p ../shared/data
for t in .gpu/*.tar.gz; do tar xzf "$t" -C ../shared/data; done
