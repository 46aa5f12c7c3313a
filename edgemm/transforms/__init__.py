"""Model-input transforms, one implementation per modality.

:mod:`edgemm.transforms.audio` turns microphone samples into waveform, log-mel or MFCC inputs
(librosa- or tf.signal-compatible); :mod:`edgemm.transforms.image` turns OpenCV camera frames
into NCHW/NHWC/NHW float inputs. Both are frozen dataclasses built strictly from the model
spec (:func:`edgemm.config.build`) and need only numpy and OpenCV, so calibration, validation
and the device runtime share them.
"""
