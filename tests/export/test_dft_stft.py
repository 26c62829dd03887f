"""The exportable STFT / iSTFT (convolutions with DFT bases) equal torch.stft / torch.istft."""

import torch

from nutq.export.graphs import DFT_STFT
from nutq.models.s3gen.hift import _hann


def test_dft_stft_and_istft_match_torch():
    n, hop = 16, 4
    w = _hann(n, torch.device("cpu"))
    dft = DFT_STFT(n, hop, w)
    s = torch.randn(3, 480)
    ref = torch.stft(s, n, hop, n, window=w, center=True, pad_mode="reflect", return_complex=True)
    out = dft.stft(s)
    bins = n // 2 + 1
    assert torch.allclose(out[:, :bins], ref.real, atol=1e-5) and torch.allclose(out[:, bins:], ref.imag, atol=1e-5)
    spec = torch.randn(3, bins, 41, dtype=torch.complex64)
    spec[:, 0].imag = 0  # a real signal's DC and Nyquist bins are real; istft ignores their imaginary parts
    spec[:, -1].imag = 0
    want = torch.istft(spec, n, hop, n, window=w, center=True, onesided=True)
    got = dft.istft(torch.cat([spec.real, spec.imag], dim=1))
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
