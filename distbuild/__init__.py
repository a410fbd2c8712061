"""distbuild: multi-arch image build and A/B OS distribution pipeline."""

__version__ = "0.1.0"
