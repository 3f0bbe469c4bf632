#!/usr/bin/python3
"""An RTSP camera on loopback for the agent's tests and the demo: an image (PNG or JPEG)
streamed as H.264 over RTSP, looped, through GStreamer's RTSP server (Debian:
gir1.2-gst-rtsp-server-1.0 python3-gst-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly).

usage: rtsp-server.py PORT IMAGE [FPS [WIDTHxHEIGHT]]   -> rtsp://127.0.0.1:PORT/cam

With a size, the image is scaled to it: the stream is that size, whatever the image's.

Prints "ready" on stdout once it listens. It listens on 127.0.0.1 only.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    if len(sys.argv) not in (3, 4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    port, image = sys.argv[1], sys.argv[2]
    fps = int(sys.argv[3]) if len(sys.argv) >= 4 else 5
    scale = ""
    if len(sys.argv) == 5:
        width, height = (int(v) for v in sys.argv[4].split("x"))
        scale = f"! videoscale ! video/x-raw,width={width},height={height} "
    decoder = "pngdec" if image.lower().endswith(".png") else "jpegdec"
    caps = "image/png" if decoder == "pngdec" else "image/jpeg"
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( multifilesrc location={image} loop=true caps={caps},framerate={fps}/1 "
        f"! {decoder} {scale}! videoconvert ! video/x-raw,format=I420 "
        "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 "
        "! rtph264pay name=pay0 pt=96 )"
    )
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
