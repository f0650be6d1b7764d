// Tensor-core backward kernels for __half (see tc_bwd.cuh).
#include "tc_bwd.cuh"
FA_INSTANTIATE_TC_BWD(__half, f16)
