// Upsample, FIR-filter and downsample for torch_utils/ops/upfirdn2d.py (StyleGAN2-ADA `upfirdn2d` semantics).
#pragma once
#include <ATen/core/Tensor.h>

// y[n, c, oy, ox] = sum_{ty, tx} g[ty, tx] * u[oy * downy + ty - py0, ox * downx + tx - px0], where u is x upsampled
// by zero insertion (u[i * upy, j * upx] = x[i, j], zero elsewhere and outside the image). g is the correlation
// filter [fh, fw] (the caller flips it for a true convolution and folds the gain in), in x's arithmetic type.
at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& g, int64_t upx, int64_t upy, int64_t downx,
                          int64_t downy, int64_t px0, int64_t py0, int64_t out_h, int64_t out_w);
