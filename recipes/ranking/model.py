"""The ranking model: a scorer of (user, list of movies), and the TFRS model that trains it.

The scorer is a functional Keras model of built-in layers only, so `model.keras` loads
in a fresh process without custom objects:

    {"user": [B] int32 code, "movie": [B, L] int32 codes (0 = padding)} -> scores [B, L]

    score(u, m) = MLP([user, movie]) + user . movie + movie bias + w . features(m),
    movie = movie id embedding + W features(m)

where features(m) are the movie's genres, release decade and statistics of the training
ratings (train.py: `data.rating_statistics`). `serving` puts integer lookups of
the raw MovieLens ids in front of it. `RankingModel` (a `tfrs.Model`) trains the scorer
with a list loss from `common.losses` and, with `rating_weight` > 0, an auxiliary rating
term: the scores plus a user bias and the mean label regress the labels (MSE).
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import losses

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

LOSSES = ("ranknet", "pairwise_hinge", "mse", "listmle")
LIST_LOSSES = {"ranknet": losses.ranknet_loss, "pairwise_hinge": losses.pairwise_hinge_loss,
               "listmle": losses.listmle_loss, "mse": losses.listwise_mse}


def build(num_users: int, num_movies: int, movie_features: np.ndarray,
                 embedding_dim: int = 32, hidden_units: tuple[int, ...] = (64, 16),
                 l2: float = 0.0) -> tf.keras.Model:
    """Scores [B, L] of users [B] and their lists of movies [B, L] (integer codes).

    `movie_features` [M + 1, F] (row 0 padding) sits in a frozen embedding table, so it
    is saved with the weights. `l2` penalises the embeddings and the movie bias.
    """
    regularizer = tf.keras.regularizers.l2(l2) if l2 else None
    user = tf.keras.Input(shape=(), dtype=tf.int32, name="user")
    movie = tf.keras.Input(shape=(None,), dtype=tf.int32, name="movie")
    users = tf.keras.layers.Embedding(num_users + 1, embedding_dim, name="user_embedding",
                                      embeddings_regularizer=regularizer)(user)  # [B, D]
    feature_table = tf.keras.layers.Embedding(num_movies + 1, movie_features.shape[1],
                                              trainable=False, name="movie_features")
    features = feature_table(movie)  # [B, L, F]
    movies = tf.keras.layers.Add(name="movie_vector")([
        tf.keras.layers.Embedding(num_movies + 1, embedding_dim, name="movie_embedding",
                                  embeddings_regularizer=regularizer)(movie),
        tf.keras.layers.Dense(embedding_dim, use_bias=False, name="feature_embedding",
                              kernel_regularizer=regularizer)(features)])  # [B, L, D]
    # The tower's first layer on [user, movie] is W_u user + W_m movie: the user half
    # is computed once per list, not once per movie (same function, fewer operations).
    first, *rest = hidden_units
    user_part = tf.keras.layers.Dense(first, use_bias=False, name="tower_user")(users)
    tower = tf.keras.layers.Dense(first, name="tower_movie")(movies)  # [B, L, H]
    # (expand_dims and matvec, not [:, newaxis] and a broadcast product: their gradients
    # are a reshape and a matmul rather than a strided-slice gradient and a tile.)
    tower = tf.nn.relu(tower + tf.expand_dims(user_part, 1))
    for index, units in enumerate(rest, start=2):
        tower = tf.keras.layers.Dense(units, activation="relu", name=f"tower_{index}")(tower)
    # An MLP over concatenated embeddings learns dot products poorly (Rendle et al.
    # 2020): the explicit user . movie term carries the personal taste.
    terms = [tf.keras.layers.Dense(1, name="tower_score")(tower),
             tf.expand_dims(tf.linalg.matvec(movies, users), -1),
             tf.keras.layers.Embedding(num_movies + 1, 1, embeddings_initializer="zeros",
                                       embeddings_regularizer=regularizer,
                                       name="movie_bias")(movie),
             # What the features say of every user's rating (a mean of few ratings,
             # an old film), on a direct path rather than only through the tower.
             tf.keras.layers.Dense(1, use_bias=False, name="feature_bias")(features)]
    scores = tf.keras.layers.Reshape((-1,), name="scores")(tf.keras.layers.Add()(terms))
    scorer = tf.keras.Model({"user": user, "movie": movie}, scores, name="scorer")
    feature_table.set_weights([np.asarray(movie_features, np.float32)])
    return scorer


def serving(scorer: tf.keras.Model, user_ids: np.ndarray, movie_ids: np.ndarray):
    """(ranker, signature): the Keras model that scores raw ids, and the SavedModel's
    serving signature (raw ids in, {"scores": [B, L]} out).

    Scores [B, L] of raw ids: users [B] int64, movies [B, L] int64 (MovieLens ids). Code
    c is the id at index c - 1 of `user_ids` / `movie_ids`; an unknown id maps to code
    0, the padding row.
    """
    user = tf.keras.Input(shape=(), dtype=tf.int64, name="user")
    movie = tf.keras.Input(shape=(None,), dtype=tf.int64, name="movie")
    codes = {}
    for name, ids, raw in (("user", user_ids, user), ("movie", movie_ids, movie)):
        lookup = tf.keras.layers.IntegerLookup(vocabulary=[int(i) for i in ids],
                                               mask_token=None, num_oov_indices=1,
                                               name=f"{name}_code")
        codes[name] = tf.cast(lookup(raw), tf.int32)
    ranker = tf.keras.Model({"user": user, "movie": movie}, scorer(codes), name="ranker")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user"),
                                  tf.TensorSpec([None, None], tf.int64, name="movie")])
    def serve(user, movie):
        return {"scores": ranker({"user": user, "movie": movie}, training=False)}

    return ranker, serve


def predict(scorers: list[tf.keras.Model], users: np.ndarray, movies: np.ndarray,
            batch_size: int = 4096) -> list[np.ndarray]:
    """Scores [N, L] float64 of `movies` [N, L] for `users` [N] (codes), one array per
    scorer.

    The scorers (one per seed) share one architecture, so one function traced once
    scores them all, each scorer's weights copied in turn into one clone: `predict`
    traces a new function per model, and from the fifth seed on TensorFlow warns of
    retracing.
    """
    clone = tf.keras.models.clone_model(scorers[0])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int32),
                                  tf.TensorSpec([None, None], tf.int32)])
    def score(user, movie):
        return clone({"user": user, "movie": movie}, training=False)

    seed_scores = []
    for scorer in scorers:
        clone.set_weights(scorer.get_weights())
        batches = [score(users[start:start + batch_size], movies[start:start + batch_size])
                   for start in range(0, len(users), batch_size)]
        seed_scores.append(np.concatenate(batches).astype(np.float64))
    return seed_scores


class RankingModel(tfrs.Model):
    """Trains `scorer` with a list loss and an auxiliary rating regression.

    loss per list = list_loss(labels, scores) + rating_weight * MSE(labels, scores +
    user bias + the mean label), averaged over the *global* batch of lists (each
    replica's share sums to the one-device loss under MirroredStrategy), plus the L2
    penalties. Labels < 0 are padding and count nowhere.
    """

    def __init__(self, scorer: tf.keras.Model, num_users: int, loss: str,
                 rating_weight: float, mean_label: float, global_batch_size: int,
                 l2: float = 0.0):
        super().__init__()
        self.scorer = scorer
        self.user_bias = tf.keras.layers.Embedding(
            num_users + 1, 1, embeddings_initializer="zeros",
            embeddings_regularizer=tf.keras.regularizers.l2(l2) if l2 else None)
        self.user_bias.build((None,))  # before fit builds the optimizer's slots
        self.list_loss = LIST_LOSSES[loss]
        self.rating_weight = rating_weight
        self.mean_label = mean_label
        self.global_batch_size = global_batch_size
        self.task = tfrs.tasks.Ranking(loss=self._per_list_loss)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")

    def _per_list_loss(self, y_true, y_pred, sample_weight=None):
        return self.list_loss(y_true, y_pred, mask=y_true >= 0)  # [B]

    def call(self, features) -> tf.Tensor:
        return self.scorer(features)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs  # labels [B, L]
        scores = self.scorer(features, training=training)
        per_list = self.task(labels=labels, predictions=scores, compute_metrics=False)
        if self.rating_weight:
            ratings = scores + self.user_bias(features["user"]) + self.mean_label
            per_list += self.rating_weight * losses.listwise_mse(labels, ratings,
                                                                 mask=labels >= 0)
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


def optimizer(name: str, learning_rate: float) -> tf.keras.optimizers.Optimizer:
    return {"adam": tf.keras.optimizers.Adam, "adagrad": tf.keras.optimizers.Adagrad}[name](
        learning_rate)
