import sys, time, torch, warnings
sys.path.insert(0, "benchmarks")
import inference_speed as b
torch.set_num_threads(2)
m = b.float_model("resnet20"); ref, i8 = b.adq_models(m, 32, 3); anc = b.anchor_model(m, 32)
for bs in [1, 32]:
    x = torch.randn(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    t0 = time.time(); c = torch.compile(i8)
    with torch.no_grad():
        c(x); print("compile s", time.time() - t0)
        print("max diff compiled vs eager", (c(x) - i8(x)).abs().max().item())
        for name, f in [("anchor", anc), ("int8", i8), ("compiled", c), ("float", m)]:
            b.time_block(lambda: f(x), 5)
            print(bs, name, round(1e3 * min(b.time_block(lambda: f(x), 20) for _ in range(3)), 3))
