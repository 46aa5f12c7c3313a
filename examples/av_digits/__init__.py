"""AV-digits: an audio-visual example task and its trained teacher model.

A camera frame of a handwritten digit (MNIST) and a spoken clip of the same digit (Free Spoken
Digit Dataset), fused by one Keras model with two named inputs into a 10-class decision. The
example trains and evaluates the teacher, writes its data as the .npz files `edgemm convert` and
`edgemm bench` take, builds a narrower student for `edgemm convert --distill --student`, and runs
the whole chain on demo media:

    python -m examples.av_digits demo|eval|train|data|student --help
"""
