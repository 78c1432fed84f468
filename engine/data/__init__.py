"""Labelled data, class-disjoint label splits and episode sampling."""

from engine.data.episodes import Episode, EpisodeSampler, TaskData, prepare_tasks
from engine.data.loading import DEMO_DATASET, LabelledData, load_labelled_data, normalise_label
from engine.data.splits import LabelSplit, split_labels

__all__ = ["DEMO_DATASET", "Episode", "EpisodeSampler", "LabelSplit", "LabelledData", "TaskData",
           "load_labelled_data", "normalise_label", "prepare_tasks", "split_labels"]
