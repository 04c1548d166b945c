"""Training data as ReferringClip datasets: synthetic referring videos, Ref-YouTube-VOS, MeViS, RefCOCO."""
