"""File-backed splits on uint8: decoding every format PIL reads, the official views within 1 grey level of PIL's,
uniform crops and fair flips, batches normalised as ToTensor + Normalize, and the same batches whatever the workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from torchvision import transforms

from sln_cli.bench.pipeline import synthetic_jpegs
from sln_cli.data import Split
from sln_cli.data.batches import Augmentation, FileImages
from sln_cli.data.files import (
    decode_batch,
    decode_bytes,
    decode_image,
    eval_transform,
    random_crop_flip,
    read_bytes,
    train_transform,
)
from sln_cli.errors import SlnError

MEAN, STD = (0.6959, 0.6537, 0.6371), (0.3113, 0.3192, 0.3214)  # Clothing1M's
CPU = torch.device("cpu")


def _pil_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")  # the official loader's Image.open(path).convert("RGB")


def _as_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, H, W) uint8


def _grey_levels(a: torch.Tensor, b: torch.Tensor) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int((a.int() - b.int()).abs().max())


def _photos(folder: Path, count: int, size: tuple[int, int] = (60, 44)) -> list[Path]:
    return synthetic_jpegs(folder, count, size=size, seed=1)  # smooth photo-like JPEGs of about `size`


def _split(paths: list[Path]) -> Split:
    return Split(labels=np.zeros(len(paths), np.int64), files=tuple(paths))


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------


def _save(folder: Path, name: str, mode: str, **options) -> Path:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(np.clip(rng.normal(128, 40, (23, 31, 3)), 0, 255).astype(np.uint8))
    path = folder / name
    (rgb if mode == "RGB" else rgb.convert(mode)).save(path, **options)
    return path


@pytest.mark.parametrize("name, mode, options, tolerance", [
    ("rgb.jpg", "RGB", {"quality": 90}, 0),  # libjpeg-turbo on both sides
    ("progressive.jpg", "RGB", {"quality": 90, "progressive": True}, 0),
    ("grey.jpg", "L", {}, 0),
    ("cmyk.jpg", "CMYK", {}, 0),
    ("grey.png", "L", {}, 0),
    ("palette.png", "P", {}, 0),
    ("alpha.png", "RGBA", {}, 0),
    ("image.bmp", "RGB", {}, 0),
    ("image.webp", "RGB", {"lossless": True}, 0),
    ("png-named.jpg", "RGB", {"format": "PNG"}, 0),  # recognised by content, not by suffix
])
def test_every_format_pil_reads_decodes_to_its_rgb(tmp_path: Path, name: str, mode: str, options: dict,
                                                   tolerance: int) -> None:
    path = _save(tmp_path, name, mode, **options)
    decoded = decode_image(path)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, 23, 31)
    assert _grey_levels(decoded, _as_tensor(_pil_rgb(path))) <= tolerance


@pytest.mark.parametrize("content", [b"\xff\xd8\xff not really a jpeg", b"plain text", b"", "truncated"])
def test_undecodable_files_are_named(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "broken.jpg"
    if content == "truncated":
        data = _save(tmp_path, "whole.jpg", "RGB", quality=90).read_bytes()
        content = data[:len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(SlnError, match=f"cannot decode image {path}"):
        decode_image(path)
    with pytest.raises(SlnError, match=f"cannot decode image {tmp_path / 'missing.jpg'}"):
        read_bytes(tmp_path / "missing.jpg")


def test_decode_batch_equals_one_by_one_and_names_a_bad_file(tmp_path: Path) -> None:
    paths = [*_photos(tmp_path / "jpegs", 3), _save(tmp_path, "grey.png", "L")]
    datas = [read_bytes(path) for path in paths]
    for batched, path in zip(decode_batch(datas, paths, device=CPU), paths, strict=True):
        assert torch.equal(batched, decode_image(path))
    broken = tmp_path / "broken.jpg"
    with pytest.raises(SlnError, match=f"cannot decode image {broken}"):
        decode_batch([*datas, torch.frombuffer(bytearray(b"\xff\xd8\xff bad"), dtype=torch.uint8)],
                     [*paths, broken], device=CPU)
    assert torch.equal(decode_bytes(datas[0], paths[0], device=CPU), decode_image(paths[0]))


# --------------------------------------------------------------------------------------------------
# The views
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size, resize, crop", [((300, 260), 256, 224), ((260, 300), 256, 224), ((41, 29), 24, 20),
                                                ((29, 41), 24, 24)])
def test_eval_view_is_pil_resize_and_center_crop(tmp_path: Path, size: tuple[int, int], resize: int,
                                                 crop: int) -> None:
    official = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(crop)])
    for path in _photos(tmp_path, 3, size):
        ours = eval_transform(resize=resize, crop=crop)(decode_image(path))
        assert ours.dtype == torch.uint8 and ours.shape == (3, crop, crop)
        assert _grey_levels(ours, _as_tensor(official(_pil_rgb(path)))) <= 1  # resamplers round apart


def test_train_view_is_the_official_crop_and_flip_for_the_same_seed(tmp_path: Path) -> None:
    official = transforms.Compose([transforms.Resize(48), transforms.RandomCrop(40), transforms.RandomHorizontalFlip()])
    ours = train_transform(resize=48, crop=40)
    (path,) = _photos(tmp_path, 1, size=(70, 56))
    image, reference = decode_image(path), _pil_rgb(path)
    for seed in range(12):
        torch.manual_seed(seed)
        view = ours(image)
        torch.manual_seed(seed)
        expected = _as_tensor(official(reference))
        assert view.dtype == torch.uint8 and view.shape == (3, 40, 40)
        assert _grey_levels(view, expected) <= 1  # the same window and flip; only the resamplers' rounding differs


def test_crop_offsets_are_uniform_and_flips_fair() -> None:
    height, width, crop, draws = 12, 15, 8, 4000
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    image = torch.stack([rows, cols, torch.zeros_like(rows)]).to(torch.uint8)  # pixel (y, x) holds (y, x, 0)
    view = train_transform(resize=height, crop=crop)  # the shorter side is already `resize`: only crop and flip
    torch.manual_seed(0)
    tops, lefts, flipped = [], [], []
    for _ in range(draws):
        window = view(image)
        flip = bool(window[1, 0, 0] > window[1, 0, 1])
        plain = window.flip(-1) if flip else window
        top, left = int(plain[0, 0, 0]), int(plain[1, 0, 0])
        assert torch.equal(plain, image[:, top:top + crop, left:left + crop])  # a window of the image, no padding
        tops.append(top), lefts.append(left), flipped.append(flip)
    # Uniform on {0..4} and {0..7}: chi-square goodness of fit; a correct crop fails one of these with p < 1e-3.
    for offsets, slack in ((tops, height - crop), (lefts, width - crop)):
        counts = np.bincount(offsets, minlength=slack + 1)
        assert len(counts) == slack + 1 and stats.chisquare(counts).pvalue > 1e-3
    assert stats.chisquare(np.bincount(np.array(tops) * 8 + np.array(lefts), minlength=40)).pvalue > 1e-3  # jointly
    # Flips: Binomial(4000, 1/2) has sd 0.0079 in the share; allow 4 sd.
    assert abs(np.mean(flipped) - 0.5) < 4 * 0.5 / np.sqrt(draws)


def test_thin_images_are_resized_to_fit_the_crop_and_small_ones_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "thin.png"
    Image.fromarray(np.full((5, 90, 3), 200, np.uint8)).save(path)  # 90 wide, 5 high
    torch.manual_seed(0)
    assert train_transform(resize=16, crop=12)(decode_image(path)).shape == (3, 12, 12)  # 5 high becomes 16
    with pytest.raises(ValueError, match="at least that large"):
        random_crop_flip(torch.zeros(3, 5, 90, dtype=torch.uint8), 12)


# --------------------------------------------------------------------------------------------------
# FileImages: normalised batches on the device
# --------------------------------------------------------------------------------------------------


def _epoch(images: FileImages, order: torch.Tensor, seed: int | None, batch_size: int = 4) -> list[torch.Tensor]:
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    augmentation = None if seed is None else Augmentation()
    batches = list(images.batches(order, batch_size, augmentation=augmentation, generator=generator))
    for (_, index), expected in zip(batches, order.split(batch_size), strict=True):
        assert torch.equal(index, expected)
    return [batch for batch, _ in batches]


def test_batches_are_the_same_with_0_and_2_workers(tmp_path: Path) -> None:
    split = _split(_photos(tmp_path, 9))
    order = torch.randperm(9, generator=torch.Generator().manual_seed(0))

    def epochs(workers: int) -> list[list[torch.Tensor]]:
        images = FileImages(split, MEAN, STD, device=CPU, resize=24, crop=20, workers=workers)
        return [_epoch(images, order, seed) for seed in (3, 3, 4, None)]

    torch.manual_seed(123)
    serial = epochs(0)  # in this process: the views' seeding must leave training's global RNG as it was
    after = torch.rand(4)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(4))
    parallel = epochs(2)
    for a, b in zip(serial, parallel, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    same, other, plain = serial[1], serial[2], serial[3]
    assert all(torch.equal(x, y) for x, y in zip(serial[0], same, strict=True))  # a resumed epoch draws the same
    assert not all(torch.equal(x, y) for x, y in zip(same, other, strict=True))  # another epoch seed, other views
    assert all(batch.shape[1:] == (3, 20, 20) and batch.dtype == torch.float32 for batch in plain)


@pytest.mark.parametrize("train", [False, True])
def test_batches_are_to_tensor_and_normalize_of_the_uint8_views(tmp_path: Path, train: bool) -> None:
    paths = _photos(tmp_path, 5)
    images = FileImages(_split(paths), MEAN, STD, device=CPU, resize=24, crop=20, workers=0)
    order = torch.tensor([4, 0, 3, 1, 2])
    batches = _epoch(images, order, 7 if train else None)
    # The documented seeding: one draw from the epoch generator, plus the sample's index, seeds its view.
    epoch_seed = int(torch.randint(0, 2**31, (1,), generator=torch.Generator().manual_seed(7))) if train else 0
    view = (train_transform if train else eval_transform)(resize=24, crop=20)
    official = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    expected = []
    for i in order.tolist():
        torch.manual_seed(epoch_seed + i)
        crop = view(decode_image(paths[i]))  # (3, 20, 20) uint8
        expected.append(official(Image.fromarray(crop.permute(1, 2, 0).numpy())))
    torch.testing.assert_close(torch.cat(batches), torch.stack(expected), rtol=0, atol=1e-6)


def test_batches_follow_dtype_and_memory_format(tmp_path: Path) -> None:
    images = FileImages(_split(_photos(tmp_path, 3)), MEAN, STD, device=CPU, resize=24, crop=20, workers=0,
                        dtype=torch.bfloat16, channels_last=True)
    (batch,) = _epoch(images, torch.arange(3), 0)
    assert batch.dtype == torch.bfloat16 and batch.is_contiguous(memory_format=torch.channels_last)


def test_a_bad_file_is_named_from_the_batches(tmp_path: Path) -> None:
    paths = _photos(tmp_path, 3)
    paths[1].write_bytes(b"\xff\xd8\xff no longer a jpeg")
    images = FileImages(_split(paths), MEAN, STD, device=CPU, resize=24, crop=20, workers=0)
    with pytest.raises(SlnError, match=f"cannot decode image {paths[1]}"):
        _epoch(images, torch.arange(3), 0)


# --------------------------------------------------------------------------------------------------
# Decoding in the main process (gpu_decode)
# --------------------------------------------------------------------------------------------------


def test_gpu_decode_needs_cuda(tmp_path: Path) -> None:
    with pytest.raises(SlnError, match="needs a CUDA device"):
        FileImages(_split(_photos(tmp_path, 1)), MEAN, STD, device=CPU, resize=24, crop=20, workers=0,
                   gpu_decode=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_bytes_path_gives_the_worker_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    """gpu_decode's plumbing on the CPU: workers read bytes, this process decodes and draws from the same seeds."""
    from sln_cli.data import batches

    monkeypatch.setattr(batches, "_require_cuda", lambda device: None)
    split = _split([*_photos(tmp_path, 5), _save(tmp_path, "grey.png", "L")])
    order = torch.tensor([5, 2, 0, 4, 1, 3])
    for seed in (11, None):
        in_workers = FileImages(split, MEAN, STD, device=CPU, resize=24, crop=20, workers=workers)
        in_process = FileImages(split, MEAN, STD, device=CPU, resize=24, crop=20, workers=workers, gpu_decode=True)
        for a, b in zip(_epoch(in_workers, order, seed), _epoch(in_process, order, seed), strict=True):
            assert torch.equal(a, b)  # CPU on both sides: the same decoder, resize and draws


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_decode_matches_the_worker_batches(tmp_path: Path) -> None:
    split = _split(_photos(tmp_path, 6, size=(300, 260)))
    order, cuda = torch.randperm(6), torch.device("cuda")
    for seed in (5, None):
        workers = FileImages(split, MEAN, STD, device=cuda, resize=256, crop=224, workers=0)
        gpu = FileImages(split, MEAN, STD, device=cuda, resize=256, crop=224, workers=0, gpu_decode=True)
        for a, b in zip(_epoch(workers, order.cuda(), seed), _epoch(gpu, order.cuda(), seed), strict=True):
            assert a.device.type == b.device.type == "cuda"
            grey_levels = (a - b).abs() * torch.tensor(STD, device=cuda).view(1, 3, 1, 1) * 255
            # nvJPEG and libjpeg-turbo, and the float resize on the GPU, round apart; another window would differ by
            # far more than 2 grey levels on average
            assert grey_levels.mean().item() < 2.0

