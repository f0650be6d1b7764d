#!/usr/bin/env bash
# Installs a Vulkan driver that runs on the CPU, so that WebGPU (Dawn, the `webgpu` npm package) finds an
# adapter on a machine without a GPU: Mesa 25's lavapipe from bookworm-backports (Debian's own Mesa 22
# lavapipe is too old for Dawn; Mesa 25's has shader-f16 and subgroups). Idempotent; needs root.
# Prints the line to export: VK_ICD_FILENAMES pointing at lavapipe's ICD.
set -euo pipefail
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
find_icd() { ls /usr/share/vulkan/icd.d/lvp_icd*.json 2>/dev/null | head -1; }
have_mesa25() {
  [[ -n $(find_icd) ]] || return 1
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [[ ${v%%.*} -ge 25 ]] 2>/dev/null
}
if ! have_mesa25; then
  . /etc/os-release
  codename=${VERSION_CODENAME:-bookworm}
  list=/etc/apt/sources.list.d/${codename}-backports.list
  if ! grep -rqs "${codename}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian ${codename}-backports main" | $SUDO tee "$list" >/dev/null
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    -t "${codename}-backports" mesa-vulkan-drivers libvulkan1 >/dev/null
fi
v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)
icd=$(find_icd)
[[ -n $icd ]] || { echo "lavapipe ICD missing after install (mesa-vulkan-drivers $v)" >&2; exit 1; }
echo "lavapipe: mesa-vulkan-drivers $v, ICD $icd" >&2
echo "export VK_ICD_FILENAMES=$icd"
