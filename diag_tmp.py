import torch, torch.nn.functional as TF
from adq_fx.int8 import onednn
torch.manual_seed(0)
def check(N, C, O, H, k, s, p, runs=30, bias=False):
    codes = torch.randint(0, 16, (N, C, H, H), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    w = torch.randint(-127, 128, (O, C, k, k), dtype=torch.int8); ws = torch.rand(O)
    packed = onednn.prepack_conv(w, ws, 1.0, 0, (s, s), (p, p), (1, 1), 1)
    exact = TF.conv2d(codes.double(), w.double()*ws.double().view(-1,1,1,1), None, s, p)
    bad = 0
    for t in range(runs):
        junk = [torch.randn(64, 16, 8, 8) for _ in range(2)]
        y = onednn.conv(codes, 1.0, 0, packed, ws, None, (s, s), (p, p), (1, 1), 1)
        bad += not torch.allclose(y.double(), exact, rtol=1e-5, atol=1e-3)
    return bad
for shape in [(64,8,16,8,1,2,0), (1,8,16,8,1,2,0), (8,8,16,8,1,2,0), (64,8,16,8,1,1,0), (64,16,16,8,3,1,1), (64,8,16,8,3,2,1), (64,16,32,8,1,2,0), (64,64,128,8,1,2,0), (8,64,128,28,1,2,0)]:
    print(shape, check(*shape))
