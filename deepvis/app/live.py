"""The Activations page's live camera: the browser camera streamed to the server (streamlit-webrtc).

The live loop owns its placeholders while it runs, which no other part of the app needs.

Conventions
-----------
* ``webrtc_streamer`` in ``SENDONLY`` mode; the script's own thread takes the frames that arrived since the
  last one and analyzes only the newest (:mod:`deepvis.live`), then redraws the photo, top-5, grid and the
  unit's map in place.  The frame callbacks of streamlit-webrtc run in another thread and cannot draw, so
  nothing is done there.
* ICE servers: :func:`deepvis.live.ice_servers` (none by default: offline, browser and server on one
  machine).
* Live pictures go out as JPEG (quality :data:`deepvis.render.JPEG_QUALITY`): a video's frames, encoded in
  a few milliseconds where a PNG of a large grid takes tens; a frozen frame is analyzed and shown lossless.
* **Freeze** opens the newest frame as the page's photo (:func:`deepvis.app.inputs.image_input`'s opened photo, PNG
  bytes), analyzed as any still photo (backward images, unit view, downloads); **Back to live video** closes it.
* A camera the browser denies, or a connection that does not come up, gives one line; the snapshot camera
  stays one click away.
"""

from __future__ import annotations

import logging
import queue
import time

import numpy as np
import streamlit as st

from deepvis import live
from deepvis.app.grid import unit_stepper
from deepvis.app.inputs import enlarged
from deepvis.errors import one_line
from deepvis.models import LoadedModel
from deepvis.render import heat_colors, jpeg_bytes, overlay, png_bytes, to_uint8, upscale

logging.getLogger("streamlit_webrtc.receive").setLevel(logging.ERROR)  # "queue overflow": we drop on purpose
WAIT_SECONDS = 5.0
# 320 x 240 is plenty for a 224-px centre crop, and a quarter of 640 x 480's encoding and decoding work.  On a
# CPU the analysis keeps up with about 10-15 frames a second, so the camera sends 15 (decoding the rest would
# only take CPU from the network); on a GPU it sends 30.
CAMERA = {"width": {"ideal": 320}, "height": {"ideal": 240}}
CAMERA_FPS = {"cpu": 15, "default": 30}


def _freeze(key: str) -> None:
    frame = st.session_state.get(f"{key}_newest")
    if frame is not None:
        st.session_state[f"{key}_opened"] = (png_bytes(frame), "frozen live frame")


def stream(loaded: LoadedModel, layer: str, key: str, photo, grid_col, unit_col) -> None:
    """The live view: camera, then per frame the view, top-5, rate and latency (``photo``), the layer's grid
    (``grid_col``) and the chosen unit's map (``unit_col``); returns when the stream stops."""
    from streamlit_webrtc import WebRtcMode, webrtc_streamer

    try:
        servers = live.ice_servers()
    except live.LiveError as exc:
        st.error(str(exc))
        return
    channels = loaded.layer(layer).channels
    fps = CAMERA_FPS.get(loaded.device.type, CAMERA_FPS["default"])
    with photo:
        try:
            context = webrtc_streamer(key=f"{key}_webrtc", mode=WebRtcMode.SENDONLY,
                                      rtc_configuration={"iceServers": servers},
                                      media_stream_constraints={"video": {**CAMERA, "frameRate": {"ideal": fps}},
                                                                "audio": False})
        except Exception as exc:  # the component needs a running Streamlit server (not AppTest): say why in one line
            st.error(f"Live video is unavailable here ({one_line(exc)}); the Camera source takes snapshots.")
            return
        st.button("Freeze", key=f"{key}_freeze", on_click=_freeze, args=(key,), disabled=not context.state.playing,
                  help="Take the current frame into the full analysis (the toolbox's f key).")
        status, view, predictions = st.empty(), st.empty(), st.empty()
    with unit_col:
        unit = unit_stepper(f"{key}_unit", channels)
        unit_map = st.empty()
    with grid_col:
        grid_place, caption = st.empty(), st.empty()
    if not context.state.playing:
        status.info("Press START to stream your camera (allow it when the browser asks); nothing leaves this "
                    "machine. Or choose Camera for snapshots.")
        return
    meter, waited = live.Meter(), time.perf_counter()
    while context.state.playing:
        receiver = context.video_receiver
        if receiver is None:
            break
        try:
            frames = receiver.get_frames(timeout=1.0)
        except queue.Empty:
            if time.perf_counter() - waited > WAIT_SECONDS:
                status.warning("No video is arriving: the camera may be blocked in the browser, or the connection "
                               "did not come up. The Camera source takes snapshots instead.")
            continue
        waited = time.perf_counter()
        newest = frames[-1]
        meter.arrived(float(newest.time or 0.0), len(frames))
        image = newest.to_ndarray(format="rgb24")
        st.session_state[f"{key}_newest"] = image
        result = live.analyze_frame(loaded, image, layer, unit)
        analysis = result.analysis
        view.image(jpeg_bytes(enlarged(analysis.view)), caption="What the network sees (centre crop)")
        predictions.markdown("  \n".join(f"**{p.prob:.0%}** {p.label}" for p in analysis.predictions))
        grid_place.image(jpeg_bytes(result.grid), width="stretch")
        caption.caption(f"All {channels} channels of {layer}, live; the framed tile is unit {unit}.")
        if analysis.is_spatial:
            unit_map.image(jpeg_bytes(np.concatenate([
                upscale(heat_colors(to_uint8(analysis.channel_map(unit))), 224, smooth=False),
                upscale(overlay(enlarged(analysis.view), analysis.channel_map(unit)), 224)], axis=1)),
                caption=f"Unit {unit}: its map and the overlay")
        meter.drawn(float(newest.time or 0.0))
        status.caption(f"Live · {meter.label} · analysis {1000 * result.seconds:.0f} ms")
