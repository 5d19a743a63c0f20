"""What the tests and the benchmarks share: the RTSP test camera (`rtsp_camera`, its client `camera`), frames made of
real faces (`scenes`) and seeded random network weights (`nets`). Nothing here imports a test module."""
