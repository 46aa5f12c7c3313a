"""Camera and microphone sources. Every frame and audio chunk carries a capture timestamp on
the session clock (time.monotonic() for live sources; for file sources, the session start
plus the media time, so a video file and a WAV file share one timeline)."""
