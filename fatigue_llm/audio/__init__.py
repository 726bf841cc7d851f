"""The driver's voice as a fatigue feature: cabin audio -> speech -> acoustic measures -> ``voice_quality``.

No rclpy here except in ``node.py``: sources (WAV file, ALSA device, decoded topic chunks) feed
``VoiceAnalyzer``, which cuts the audio into timestamped blocks, finds speech with webrtcvad, measures the
speech with Praat (praat-parselmouth) and scores it against the driver's own alert baseline.

What moves with sleepiness in speech (and what ``voice_quality`` therefore looks at):

- Schuller, Steidl, Batliner, Schiel & Krajewski (2011), "The INTERSPEECH 2011 Speaker State Challenge"
  (Sleepiness Sub-Challenge, Sleepy Language Corpus, 99 speakers, Karolinska Sleepiness Scale): sleepiness is
  audible but subtle; brute-force functionals of prosody (F0, energy, durations), spectrum and voice quality
  (jitter, shimmer, HNR) separated sleepy from non-sleepy speakers at only about 70 % unweighted recall in the
  baseline, and the entrants' best systems stayed in the low 70s. A voice measure is one weak cue among the
  others, never a detector on its own; and it is speaker-dependent, hence a per-driver baseline here.
- Krajewski, Batliner & Golz (2009), "Acoustic sleepiness detection: framework and validation of a
  speech-adapted pattern recognition approach", Behavior Research Methods 41(3): sleepiness lowers muscle
  tension and articulatory effort (the "cognitive-physiological mediator" model): slower, flatter (less F0
  variation), less precise and more breathy speech (lower harmonics-to-noise ratio, more perturbation).
- Greeley, Friets, Wilson, Raghavan, Picone & Berg (2006), "Detecting fatigue from voice using speech
  recognition", IEEE ISSPIT, and Greeley et al. (2007), "Fatigue estimation using voice analysis", Behavior
  Research Methods 39(3): over 36 h of sleep deprivation, phone durations and spectral features changed with
  fatigue (slower, longer phones).
- Harrison & Horne (1997), "Sleep deprivation affects speech", Sleep 20(10): flattened intonation (monotony)
  and slower, less fluent speech after one night without sleep; Vogel, Fletcher & Maruff (2010), "Acoustic
  analysis of the effects of sustained wakefulness on speech", JASA 128(6): longer pauses and slower speech
  as wakefulness is prolonged. Whitmore & Fisher (1996), Speech Communication 20: lower speech rate and F0
  during sustained operations.

So the score falls when, against the driver's baseline, the speech rate drops, F0 variability (in semitones)
drops, HNR drops, or jitter / shimmer rise. Mean F0 is measured and published but not scored: its direction
is inconsistent across these studies. Only the sleepy direction counts: faster or livelier than the baseline
is 1. Speech rate is syllable nuclei per second of speech (de Jong & Wempe 2009, "Praat script to detect
syllable nuclei and measure speech rate automatically", Behavior Research Methods 41(2)).
"""
