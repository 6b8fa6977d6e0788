"""``deepwe explain`` output: one folder per patient with the JSON and the pictures.

File names carry modality names (the spec's, chosen by the team), never patient data:

    explanation.json           everything in :meth:`PatientExplanation.to_dict`
    contributions.png          Shapley values per modality next to the model's modality weights
    <modality>.png             tabular bars, image saliency overlay, sensor plot, spectrogram
    <modality>-waveform.png    audio: the waveform
    <modality>.html            text: the note with its words highlighted (escaped)
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from explain import figures, highlight
from pipelines.bundles.loading import Bundle
from pipelines.common.json_values import json_text
from pipelines.explanations.patient_explanation import ModalityExplanation, PatientExplanation

NOTE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.6}}
.legend span{{padding:0 .3em}}</style></head>
<body><h1>{title}</h1>
<p class="legend"><span style="background:rgba(214,39,40,.5)">towards the outcome</span>
<span style="background:rgba(31,119,180,.5)">away from it</span>
(Integrated Gradients through the language model; baseline: every word piece replaced by [PAD])</p>
{body}
</body></html>
"""


def write_explanation(explanation: PatientExplanation, bundle: Bundle, out: str | Path) -> list[Path]:
    """Write the JSON and the pictures of one explanation into ``out`` (created). Returns the files."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "explanation.json"]
    written[0].write_text(json_text(explanation.to_dict()))
    modalities = list(explanation.shapley)
    weights = explanation.prediction.modality_weights
    contributions = figures.bar_chart(
        [f"{m} (Shapley)" for m in modalities] + [f"{m} (weight)" for m in modalities],
        [explanation.shapley[m] for m in modalities] + [weights.get(m, 0.0) for m in modalities],
        title="Modality contributions to the risk (Shapley) and the model's modality weights",
        xlabel="risk difference / weight",
    )
    written.append(_write(folder / "contributions.png", contributions))
    for name, item in explanation.modalities.items():
        written += _modality_files(folder, name, item, bundle)
    return written


def _write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def _modality_files(folder: Path, name: str, item: ModalityExplanation, bundle: Bundle) -> list[Path]:
    read = item.extras.get("read")
    if item.kind == "tabular" or item.extras.get("statistics"):
        tokens, attribution = _largest(item.tokens, item.token_attribution.tolist())
        picture = figures.bar_chart(
            tokens,
            attribution,
            title=f"{name}: attribution per {'statistic' if item.kind == 'sensor' else 'variable'} (log-odds)",
            xlabel="Integrated Gradients" + (" / occlusion" if item.kind == "tabular" else ""),
        )
        return [_write(folder / f"{name}.png", picture)]
    if item.kind == "image":
        image = np.asarray(read, dtype=np.float32)
        saliency = item.attribution.abs().sum(0).numpy()  # over channels: (H, W) or (D, H, W)
        if image.ndim == saliency.ndim + 1:
            image = image.mean(0)
        if image.ndim == 3:  # a volume: the middle slice
            image = image[image.shape[0] // 2]
            saliency = saliency[saliency.shape[0] // 2]
        return [_write(folder / f"{name}.png", figures.saliency_overlay(image, saliency))]
    if item.kind == "sensor":
        stats = bundle.preprocessing["sensor"][name]
        observed = item.extras["observed"].numpy()
        mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
        grid = item.extras["input"].numpy() * std + mean
        values = np.where(observed, grid, np.nan)
        times = read.start_s + np.arange(len(values)) / read.rate_hz
        channels = list(bundle.spec.modalities[name].channels)
        picture = figures.sensor_attribution_plot(times, values, item.attribution.numpy(), channels)
        return [_write(folder / f"{name}.png", picture)]
    if item.kind == "audio":
        config = bundle.model.encoders[name].config
        spectrum = figures.spectrogram_attribution(
            item.extras["spectrum"].numpy(), item.attribution.numpy(), config.hop_length / config.sample_rate
        )
        wave = figures.waveform_plot(item.extras["input"].numpy(), config.sample_rate)
        return [_write(folder / f"{name}.png", spectrum), _write(folder / f"{name}-waveform.png", wave)]
    if item.kind == "text":
        words = item.extras.get("words", [])
        body = highlight.highlighted_note_html([w for w, _ in words], [a for _, a in words])
        page = NOTE_PAGE.format(title=html.escape(f"{name}: word attributions"), body=body)
        return [_write(folder / f"{name}.html", page)]
    return []


MAX_BARS = 25


def _largest(tokens: list[str], attribution: list[float]) -> tuple[list[str], list[float]]:
    """The :data:`MAX_BARS` tokens with the largest absolute attribution, in token order."""
    if len(tokens) <= MAX_BARS:
        return tokens, attribution
    keep = sorted(sorted(range(len(tokens)), key=lambda i: -abs(attribution[i]))[:MAX_BARS])
    return [tokens[i] for i in keep], [attribution[i] for i in keep]
