"""Make the small "deployed-style" ONNX models of tests/e2e/deployed/ (not part of cimc).

Each model reproduces, at toy width and with seeded random weights, the structure of a network
people deploy and exports it the way its ecosystem does, so the suite sees the same ONNX ops:

  yolov8.onnx        a YOLOv8-family detector as ultralytics builds it (Conv-BN-SiLU, C2f, SPPF,
                     an FPN/PAN neck, a Detect head with DFL box decoding and anchors made from
                     the feature shapes with arange/meshgrid), exported like
                     ``yolo export format=onnx dynamic=True`` (torch tracer, opset 17, dynamic
                     batch/height/width)
  bert_script.onnx   a BERT-style encoder (HuggingFace BertModel's structure: word/position/type
  bert_dynamo.onnx   embeddings, masked multi-head self-attention, erf GELU, layer norms, a tanh
                     pooler, plus the mean/max token pooling of sentence-transformers), exported by
                     the torch tracer (opset 17) and by torch.export (dynamo=True)
  filetype.onnx      a byte-level file-type classifier (embedding, Conv1D, global max pooling,
                     attention pooling with ReduceSum, a tanh dense layer); torch writes
                     AdaptiveMaxPool1d(1) as a MaxPool over the whole axis, which the script
                     turns into the equivalent GlobalMaxPool (the op Keras converters emit)
  lstm.onnx          torch.nn.LSTM (2 layers, the second bidirectional) + a linear head
  gru.onnx           torch.nn.GRU + a linear head

Requires torch (CPU) and onnxscript (for dynamo=True); cimc and its tests need neither. Run from
anywhere: ``python tests/e2e/deployed/make_models.py``. The output is deterministic up to the
exporter's version.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0

# ----------------------------------------------------------------------------- YOLOv8


class Conv(nn.Module):
    """ultralytics.nn.modules.conv.Conv: Conv2d (no bias) + BatchNorm2d + SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    """CSP bottleneck with 2 convolutions (YOLOv8's block): split, n bottlenecks, concat all."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over reg_max bins, expectation by a 1x1 conv."""

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x):
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats, strides, offset: float = 0.5):
    """ultralytics.utils.tal.make_anchors: anchor centres and strides from the feature shapes."""
    anchor_points, stride_tensor = [], []
    dtype = feats[0].dtype
    for i, stride in enumerate(strides):
        _, _, h, w = feats[i].shape
        sx = torch.arange(end=w, dtype=dtype) + offset
        sy = torch.arange(end=h, dtype=dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, dtype=dtype))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


def dist2bbox(distance, anchor_points, dim: int = 1):
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)


class Detect(nn.Module):
    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[float, ...]) -> None:
        super().__init__()
        self.nc, self.nl, self.reg_max = nc, len(ch), 16
        self.no = nc + self.reg_max * 4
        self.stride = strides
        c2, c3 = max(16, ch[0] // 4, self.reg_max * 4) // 2, max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * self.reg_max, 1))
            for x in ch)
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch)
        self.dfl = DFL(self.reg_max)

    def forward(self, x):
        x = [torch.cat((self.cv2[i](x[i]), self.cv3[i](x[i])), 1) for i in range(self.nl)]
        shape = x[0].shape
        x_cat = torch.cat([xi.view(shape[0], self.no, -1) for xi in x], 2)
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(x, self.stride, 0.5))
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class YOLOv8(nn.Module):
    """yolov8.yaml's backbone and head at width w (YOLOv8n has w = 16, i.e. 16..256 channels)."""

    def __init__(self, w: int = 3, nc: int = 3) -> None:
        super().__init__()
        c = [w, 2 * w, 4 * w, 8 * w, 16 * w]
        self.b0, self.b1 = Conv(3, c[0], 3, 2), Conv(c[0], c[1], 3, 2)
        self.b2, self.b3 = C2f(c[1], c[1], 1, True), Conv(c[1], c[2], 3, 2)
        self.b4, self.b5 = C2f(c[2], c[2], 2, True), Conv(c[2], c[3], 3, 2)
        self.b6, self.b7 = C2f(c[3], c[3], 2, True), Conv(c[3], c[4], 3, 2)
        self.b8, self.b9 = C2f(c[4], c[4], 1, True), SPPF(c[4], c[4], 5)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12 = C2f(c[4] + c[3], c[3], 1)
        self.h15 = C2f(c[3] + c[2], c[2], 1)
        self.h16, self.h18 = Conv(c[2], c[2], 3, 2), C2f(c[2] + c[3], c[3], 1)
        self.h19, self.h21 = Conv(c[3], c[3], 3, 2), C2f(c[3] + c[4], c[4], 1)
        self.detect = Detect(nc, (c[2], c[3], c[4]), (8.0, 16.0, 32.0))

    def forward(self, x):
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        h12 = self.h12(torch.cat((self.up(p5), p4), 1))
        h15 = self.h15(torch.cat((self.up(h12), p3), 1))
        h18 = self.h18(torch.cat((self.h16(h15), h12), 1))
        h21 = self.h21(torch.cat((self.h19(h18), p5), 1))
        return self.detect([h15, h18, h21])


# ----------------------------------------------------------------------------- BERT


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_pos: int, types: int) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_pos, hidden)
        self.token_type = nn.Embedding(types, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, input_ids, token_type_ids):
        b, s = input_ids.shape
        position_ids = torch.arange(s).unsqueeze(0).expand(b, s)
        x = self.word(input_ids) + self.position(position_ids) + self.token_type(token_type_ids)
        return self.norm(x)


def gelu(x):
    """BERT's original erf GELU, written out as in HuggingFace's ``gelu_python``."""
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def rms_norm(x, weight, eps: float = 1e-6):
    """T5-style RMS norm: x * rsqrt(mean(x^2) + eps) * weight."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, ff: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden // heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out = nn.Linear(hidden, hidden)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.inter = nn.Linear(hidden, ff)
        self.out = nn.Linear(ff, hidden)
        self.norm2 = nn.Parameter(torch.rand(hidden) + 0.5)

    def split_heads(self, x):
        b, s, _ = x.shape
        return x.view(b, s, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x, mask_bias):
        q, k, v = (self.split_heads(f(x)) for f in (self.query, self.key, self.value))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask_bias
        # OPT/BART-style fp16 guard, then a numerically stable softmax written out
        scores = torch.max(scores, torch.tensor(torch.finfo(scores.dtype).min))
        scores = scores - scores.amax(-1, keepdim=True)
        probs = scores.exp()
        probs = probs / probs.sum(-1, keepdim=True)
        ctx = torch.matmul(probs, v).transpose(1, 2).flatten(2)
        x = self.norm1(x + self.attn_out(ctx))
        return rms_norm(x + self.out(gelu(self.inter(x))), self.norm2)


class Bert(nn.Module):
    def __init__(self, vocab=64, hidden=32, heads=4, ff=64, layers=2, max_pos=16, types=2):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, hidden, max_pos, types)
        self.layers = nn.ModuleList(BertLayer(hidden, heads, ff) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids, attention_mask, token_type_ids):
        x = self.embeddings(input_ids, token_type_ids)
        # HuggingFace's extended attention mask: 0 where attended, the dtype's min elsewhere
        pad = (attention_mask == 0)[:, None, None, :]
        mask_bias = torch.where(pad, torch.finfo(x.dtype).min, 0.0)
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = torch.tanh(self.pooler(x[:, 0]))
        # sentence-transformers' mean and max token pooling (padding excluded)
        keep = attention_mask.unsqueeze(-1).to(x.dtype)
        mean = (x * keep).sum(1) / torch.clamp(keep.sum(1), min=1e-9)
        biggest = torch.where(keep == 0, -1e9, x).amax(1)
        return x, pooled, torch.minimum(mean, biggest)


# ----------------------------------------------------------------------------- file types


class FileTypeNet(nn.Module):
    """Bytes -> file type: byte embedding, two Conv1D layers, global max pooling beside an
    attention pooling (softmax weights summed with ReduceSum), a tanh dense layer, logits."""

    def __init__(self, classes: int = 8, embed: int = 8, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, embed)
        self.conv1 = nn.Conv1d(embed, width, 5, stride=2)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.score = nn.Conv1d(width, 1, 1)
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.dense = nn.Linear(2 * width, width)
        self.head = nn.Linear(width, classes)

    def forward(self, data):
        x = self.embed(data).transpose(1, 2)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        weights = torch.softmax(self.score(x), -1)
        attended = torch.sum(x * weights, -1)
        pooled = self.pool(x).squeeze(-1)
        return self.head(torch.tanh(self.dense(torch.cat((pooled, attended), 1))))


# ----------------------------------------------------------------------------- recurrent


class LSTMNet(nn.Module):
    def __init__(self, features: int = 6, hidden: int = 12, classes: int = 4) -> None:
        super().__init__()
        self.lstm1 = nn.LSTM(features, hidden, batch_first=True)
        self.lstm2 = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        y, _ = self.lstm1(x)
        y, (h, _) = self.lstm2(y)
        return self.head(y), h


class GRUNet(nn.Module):
    def __init__(self, features: int = 6, hidden: int = 12, classes: int = 4) -> None:
        super().__init__()
        self.gru = nn.GRU(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        y, h = self.gru(x)
        return self.head(y[:, -1]), h


# ----------------------------------------------------------------------------- export


def _randomize_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics and affine parameters (a trained model's have them)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def global_max_pool(path: Path) -> None:
    """Replace the MaxPool nodes (AdaptiveMaxPool1d(1): a window over the whole axis) by
    GlobalMaxPool, which computes the same."""
    m = onnx.load(str(path))
    for node in m.graph.node:
        if node.op_type == "MaxPool":
            node.op_type = "GlobalMaxPool"
            del node.attribute[:]
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def export(model: nn.Module, args: tuple, name: str, inputs: list[str], outputs: list[str],
           dynamic: dict[str, dict[int, str]], dynamo: bool = False, opset: int = 17,
           edit=None) -> None:
    path = HERE / name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, args, str(path), input_names=inputs, output_names=outputs,
                              dynamo=True, external_data=False, optimize=True,
                              dynamic_shapes=None)
        else:
            torch.onnx.export(model, args, str(path), input_names=inputs, output_names=outputs,
                              opset_version=opset, dynamo=False, dynamic_axes=dynamic)
    if edit is not None:
        edit(path)
    m = onnx.load(str(path))
    ops = sorted({n.op_type for n in m.graph.node})
    print(f"{name}: {path.stat().st_size} bytes, opset "
          f"{m.opset_import[0].version}, ops {' '.join(ops)}")


def main() -> None:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    yolo = YOLOv8().eval()
    _randomize_norms(yolo, gen)
    with torch.no_grad():
        export(yolo, (torch.rand(1, 3, 64, 64, generator=gen),), "yolov8.onnx", ["images"],
               ["output0"], {"images": {0: "batch", 2: "height", 3: "width"},
                             "output0": {0: "batch", 2: "anchors"}})

    bert = Bert().eval()
    ids = torch.randint(0, 64, (2, 8), generator=gen)
    mask = torch.ones(2, 8, dtype=torch.int64)
    mask[1, 5:] = 0
    types = torch.zeros(2, 8, dtype=torch.int64)
    types[:, 4:] = 1
    names = ["input_ids", "attention_mask", "token_type_ids"]
    outs = ["last_hidden_state", "pooler_output", "sentence_embedding"]
    dyn = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad():
        export(bert, (ids, mask, types), "bert_script.onnx", names, outs, dyn)
        export(bert, (ids, mask, types), "bert_dynamo.onnx", names, outs, dyn, dynamo=True)

    ft = FileTypeNet().eval()
    data = torch.randint(0, 256, (1, 64), generator=gen)
    with torch.no_grad():
        export(ft, (data,), "filetype.onnx", ["bytes"], ["logits"], {"bytes": {0: "batch"}},
               edit=global_max_pool)

    x = torch.randn(2, 5, 6, generator=gen)
    with torch.no_grad():
        export(LSTMNet().eval(), (x,), "lstm.onnx", ["x"], ["y", "h"], {"x": {0: "batch"}})
        export(GRUNet().eval(), (x,), "gru.onnx", ["x"], ["y", "h"], {"x": {0: "batch"}})


if __name__ == "__main__":
    main()
