import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

// Without a GPU, point Vulkan at lavapipe when it is installed and nothing else was chosen.
const lvp = '/usr/share/vulkan/icd.d/lvp_icd.json';
if (
  !process.env.VK_ICD_FILENAMES &&
  !process.env.VK_DRIVER_FILES &&
  !existsSync('/dev/nvidia0') &&
  existsSync(lvp)
) {
  process.env.VK_ICD_FILENAMES = lvp;
}
// llvmpipe compiles 128-bit-wide code about 1.5x faster than 256-bit; compilation dominates the suite.
process.env.LP_NATIVE_VECTOR_WIDTH ??= '128';
// Test files run in separate processes: Mesa's on-disk cache lets the second reuse the first's
// pipelines. Its default location comes from HOME/XDG_CACHE_HOME, which a task runner may not pass on.
process.env.MESA_SHADER_CACHE_DIR ??= join(homedir(), '.cache', 'flashattn-mesa-shader-cache');
