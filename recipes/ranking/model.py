"""A TFRS listwise ranking model: user and movie towers into a scoring MLP.

Inputs: {"user": [B] int32, "movie": [B, L] int32 (0 = padding)}; output scores [B, L].
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from common import losses

LOSSES = ("ranknet", "pairwise_hinge", "mse", "listmle")


def list_loss(name: str):
    """Per-list loss `(labels [B, L], scores [B, L]) -> [B]`; labels < 0 are padding."""
    function = {
        "ranknet": losses.ranknet_loss,
        "pairwise_hinge": losses.pairwise_hinge_loss,
        "listmle": losses.listmle_loss,
        "mse": losses.listwise_mse,
    }[name]
    return lambda labels, scores: function(labels, scores, mask=labels >= 0)


class RankingModel(tfrs.Model):
    """Scores every movie of a user's list; trained with a listwise or pairwise loss.

    score(u, m) = MLP([user, movie, genre embeddings]) + user·(movie + genre) + movie bias.
    The loss is averaged over the *global* batch of lists, so each replica's share sums
    to the one-device loss under MirroredStrategy.
    """

    def __init__(
        self,
        num_users: int,
        num_movies: int,
        movie_genres: np.ndarray,
        loss: str,
        global_batch_size: int,
        embedding_dim: int = 32,
        hidden_units: tuple[int, ...] = (64, 16),
        item_bias: bool = True,
        dot_interaction: bool = True,
        l2: float = 0.0,
    ):
        super().__init__()
        regularizer = tf.keras.regularizers.l2(l2) if l2 else None
        self.user_embedding = tf.keras.layers.Embedding(
            num_users + 1, embedding_dim, embeddings_regularizer=regularizer)
        self.movie_embedding = tf.keras.layers.Embedding(
            num_movies + 1, embedding_dim, embeddings_regularizer=regularizer)
        self.movie_genres = tf.constant(movie_genres, tf.float32)  # [M + 1, G]
        self.genre_embedding = tf.keras.layers.Dense(embedding_dim, use_bias=False)
        self.movie_bias = (
            tf.keras.layers.Embedding(num_movies + 1, 1, embeddings_initializer="zeros")
            if item_bias else None
        )
        self.score_tower = tf.keras.Sequential(
            [tf.keras.layers.Dense(units, activation="relu") for units in hidden_units]
            + [tf.keras.layers.Dense(1)]
        )
        self.dot_interaction = dot_interaction
        self.per_list_loss = list_loss(loss)
        self.global_batch_size = global_batch_size
        self.task = tfrs.tasks.Ranking(loss=self._loss_for_task)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")

    def _loss_for_task(self, y_true, y_pred, sample_weight=None):
        return self.per_list_loss(y_true, y_pred)

    def call(self, features) -> tf.Tensor:
        movies = features["movie"]  # [B, L]
        list_length = tf.shape(movies)[1]
        users = self.user_embedding(features["user"])  # [B, D]
        users = tf.repeat(users[:, tf.newaxis, :], list_length, axis=1)  # [B, L, D]
        items = self.movie_embedding(movies)  # [B, L, D]
        genres = self.genre_embedding(tf.gather(self.movie_genres, movies))  # [B, L, D]
        towers = tf.concat([users, items, genres], axis=-1)
        scores = tf.squeeze(self.score_tower(towers), axis=-1)  # [B, L]
        if self.dot_interaction:
            # An MLP over concatenated embeddings learns dot products poorly (Rendle et
            # al. 2020); the explicit user·movie term carries the personal taste.
            scores += tf.reduce_sum(users * (items + genres), axis=-1)
        if self.movie_bias is not None:
            scores += tf.squeeze(self.movie_bias(movies), axis=-1)
        return scores

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs
        per_list = self.task(labels=labels, predictions=self(features, training=training),
                             compute_metrics=False)  # [B_replica]
        self.loss_tracker.update_state(per_list)
        return tf.nn.compute_average_loss(per_list, global_batch_size=self.global_batch_size)

    def train_step(self, inputs):
        # TFRS's train_step reports the replica-scaled loss; report the true mean.
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            if self.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.losses))
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return {"loss": self.loss_tracker.result()}

    def test_step(self, inputs):
        self.compute_loss(inputs)
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]

    @tf.function(reduce_retracing=True)
    def score(self, users: tf.Tensor, movies: tf.Tensor) -> tf.Tensor:
        """Scores [B, L] of users [B] and their lists of movies [B, L]."""
        return self({"user": users, "movie": movies}, training=False)


def score_lists(model: RankingModel, users: np.ndarray, movies: np.ndarray,
                batch_size: int = 4096) -> np.ndarray:
    """Scores [N, L] of lists given as users [N] and movies [N, L]."""
    scores = [
        model.score(users[start:start + batch_size], movies[start:start + batch_size]).numpy()
        for start in range(0, len(users), batch_size)
    ]
    return np.concatenate(scores)
