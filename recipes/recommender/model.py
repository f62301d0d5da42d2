"""The multi-task recommender: two towers with a shared bottom (or MMoE), and three heads.

`build` gives a functional Keras model of built-in layers only:

    {"user": [B] int32 code, "movie": [B, L] int32 codes (0 = padding)} ->
    {"user_vector": [B, D], "movie_vector": [B, L, D],   # retrieval: score = u . m
     "ranking": [B, L], "rating": [B, L]}

Each side (user, movie) embeds its code and its features (`data.user_features`,
`data.movie_features`, frozen tables saved with the weights). `shared_bottom`: one MLP per
side, then a linear projection per task. `mmoe` (Ma et al. 2018): `num_experts` MLPs per
side mixed by a softmax gate per task. The retrieval vectors of the two sides are the two
towers (the catalog is scored by one matrix product); ranking and rating heads are MLPs on
the user's and the movie's task representations plus their dot product (Rendle et al.
2020: an MLP learns dot products poorly), rating also a movie and a user bias.

`MultiTask` trains it: retrieval is a softmax over the full catalog (~9k movies on the
default data: every step scores the whole catalog, no sampling and no log-q correction),
ranking is RankNet (`common.losses.ranknet_loss`) within each list, rating is the squared
error; the task losses are combined by `weighting` (static weights, FAMO or a
`common.balancing` gradient method).
"""

from __future__ import annotations

import common  # noqa: F401  (Keras 2 before TensorFlow)
from common import balancing, losses

import numpy as np
import tensorflow as tf

TASKS = ("retrieval", "ranking", "rating")
ARCHITECTURES = ("shared_bottom", "mmoe")
GRADIENT_WEIGHTINGS = tuple(balancing.METHODS)  # one backward pass per task
WEIGHTINGS = ("static", "famo", *GRADIENT_WEIGHTINGS)


def _side(name: str, code, count: int, features: np.ndarray, embedding_dim: int,
          hidden_units, architecture: str, num_experts: int) -> dict:
    """{task: [..., D]} representations of one side's codes."""
    table = tf.keras.layers.Embedding(count + 1, features.shape[1], trainable=False,
                                      name=f"{name}_features")
    x = tf.keras.layers.Concatenate(name=f"{name}_input")([
        tf.keras.layers.Embedding(count + 1, embedding_dim, name=f"{name}_embedding")(code),
        tf.keras.layers.Dense(embedding_dim, name=f"{name}_feature_embedding")(table(code))])

    def mlp(prefix):
        h = x
        for index, units in enumerate(hidden_units):
            h = tf.keras.layers.Dense(units, activation="relu", name=f"{prefix}_{index}")(h)
        return h

    if architecture == "shared_bottom":
        mixed = {task: h for h in [mlp(f"{name}_bottom")] for task in TASKS}
    else:
        experts = tf.stack([mlp(f"{name}_expert{e}") for e in range(num_experts)], -2)
        mixed = {}
        for task in TASKS:  # [..., E] gate weights, [..., E, H] experts -> [..., H]
            gate = tf.keras.layers.Dense(num_experts, activation="softmax",
                                         name=f"{name}_gate_{task}")(x)
            mixed[task] = tf.reduce_sum(tf.expand_dims(gate, -1) * experts, -2)
    vectors = {task: tf.keras.layers.Dense(embedding_dim, name=f"{name}_{task}")(mixed[task])
               for task in TASKS}
    return vectors, table


def _head(task: str, user, movie, units: int):
    """[B, L] scores of movies [B, L, D] for users [B, D]."""
    # W_u u + W_m m: the user half once per list, not once per movie.
    hidden = tf.nn.relu(tf.keras.layers.Dense(units, name=f"{task}_movie")(movie)
                        + tf.expand_dims(tf.keras.layers.Dense(
                            units, use_bias=False, name=f"{task}_user")(user), 1))
    score = tf.squeeze(tf.keras.layers.Dense(1, name=f"{task}_score")(hidden), -1)
    return score + tf.linalg.matvec(movie, user)


def build(num_users: int, num_movies: int, user_features: np.ndarray,
          movie_features: np.ndarray, *, mean_rating: float, embedding_dim: int = 32,
          hidden_units=(64,), architecture: str = "shared_bottom",
          num_experts: int = 4) -> tf.keras.Model:
    """The network (see the module docstring); `user_features [U + 1, Fu]`,
    `movie_features [M + 1, Fm]` (row 0 padding); `mean_rating` starts the rating head."""
    user = tf.keras.Input(shape=(), dtype=tf.int32, name="user")
    movie = tf.keras.Input(shape=(None,), dtype=tf.int32, name="movie")
    options = dict(embedding_dim=embedding_dim, hidden_units=hidden_units,
                   architecture=architecture, num_experts=num_experts)
    users, user_table = _side("user", user, num_users, user_features, **options)
    movies, movie_table = _side("movie", movie, num_movies, movie_features, **options)
    units = hidden_units[-1] if hidden_units else embedding_dim
    ranking = _head("ranking", users["ranking"], movies["ranking"], units)
    rating = (_head("rating", users["rating"], movies["rating"], units)
              + tf.squeeze(tf.keras.layers.Embedding(
                  num_movies + 1, 1, embeddings_initializer="zeros", name="movie_bias")(movie),
                  -1)
              + tf.keras.layers.Embedding(num_users + 1, 1, embeddings_initializer="zeros",
                                          name="user_bias")(user)
              + mean_rating)
    outputs = {"user_vector": tf.keras.layers.Identity(name="user_vector")(users["retrieval"]),
               "movie_vector": tf.keras.layers.Identity(name="movie_vector")(
                   movies["retrieval"]),
               "ranking": tf.keras.layers.Identity(name="ranking")(ranking),
               "rating": tf.keras.layers.Identity(name="rating")(rating)}
    network = tf.keras.Model({"user": user, "movie": movie}, outputs, name="recommender")
    user_table.set_weights([np.asarray(user_features, np.float32)])
    movie_table.set_weights([np.asarray(movie_features, np.float32)])
    return network


def towers(network: tf.keras.Model) -> tuple[tf.keras.Model, tf.keras.Model]:
    """(user tower: codes [B] -> [B, D], movie tower: codes [B, L] -> [B, L, D]): the
    retrieval vectors, sharing the network's layers."""
    user, movie = network.input["user"], network.input["movie"]
    return (tf.keras.Model(user, network.get_layer("user_vector").output),
            tf.keras.Model(movie, network.get_layer("movie_vector").output))


class MultiTask(tf.keras.Model):
    """Trains `network` on `tasks` (all three, or one for a single-task model), their
    per-list losses averaged over the replica's lists and combined by `weighting`:

      static       Σ w_k L_k with fixed `static_weights` (retrieval, ranking, rating)
      famo         FAMO (Liu et al. 2023, `common.balancing.FAMO`)
      pcgrad, aligned_mtl, nash_mtl, cagrad   the per-task gradients of the shared
                   weights combined by `common.balancing`

    Lists are the unit: each replica holds an equal share of lists, so the global loss is
    the mean of the replicas' (as in the depth recipe's MultiTask).
    """

    def __init__(self, network: tf.keras.Model, num_movies: int, *, tasks=TASKS,
                 weighting: str = "static", static_weights=(1.0, 1.0, 1.0), **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.user_tower, self.movie_tower = towers(network)
        self.tasks = tuple(tasks)
        self.weighting = weighting if len(self.tasks) > 1 else "static"
        weights = dict(zip(TASKS, static_weights))
        self.static_weights = [weights[t] if len(self.tasks) > 1 else 1.0 for t in self.tasks]
        self.catalog = tf.range(num_movies + 1, dtype=tf.int32)[tf.newaxis]  # [1, M + 1]
        if self.weighting == "famo":
            self.famo = balancing.FAMO(len(self.tasks))
        self.trackers = {name: tf.keras.metrics.Mean(name=name) for name in
                         ["loss", *(f"{t}_loss" for t in self.tasks),
                          *(f"weight_{t}" for t in self.tasks)]}

    def call(self, inputs, training=False):
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def task_losses(self, inputs, ratings, training=True) -> list:
        """[K] scalars: each task's per-list mean loss over the replica's lists."""
        outputs = self.network(inputs, training=training)
        valid = ratings >= 0
        count = tf.reduce_sum(tf.cast(valid, tf.float32), 1)

        def list_mean(values):  # [B, L] -> [B] mean over each list's rated movies
            return tf.reduce_sum(tf.where(valid, values, 0.0), 1) / count

        found = []
        for task in self.tasks:
            if task == "retrieval":
                catalog = self.movie_tower(self.catalog, training=training)[0]  # [M + 1, D]
                logits = tf.matmul(outputs["user_vector"], catalog, transpose_b=True)
                # Column 0 is padding, never a candidate.
                logits += tf.one_hot(0, tf.shape(logits)[1], on_value=-1e9)
                positive = tf.linalg.matvec(outputs["movie_vector"], outputs["user_vector"])
                per_list = list_mean(tf.reduce_logsumexp(logits, 1, keepdims=True) - positive)
            elif task == "ranking":
                per_list = losses.ranknet_loss(ratings, outputs["ranking"], mask=valid)
            else:
                per_list = list_mean(tf.square(outputs["rating"] - ratings))
            found.append(tf.reduce_mean(per_list))
        return found

    def loss_weights(self, task_losses) -> tf.Tensor:
        if self.weighting == "famo":
            return self.famo.loss_weights(balancing.global_mean(task_losses))
        if self.weighting in GRADIENT_WEIGHTINGS:
            return tf.ones([len(self.tasks)], tf.float32)
        return tf.constant(self.static_weights, tf.float32)

    def train_step(self, data):
        inputs, ratings = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        variables = self.network.trainable_variables
        gradient_method = self.weighting in GRADIENT_WEIGHTINGS
        with tf.GradientTape(persistent=gradient_method) as tape:
            task_losses = self.task_losses(inputs, ratings)
            weights = self.loss_weights(task_losses)
            total = tf.reduce_sum(weights * tf.stack(task_losses))
            replica_share = total / replicas
        balancing.step(self.optimizer, tape, task_losses, replica_share, variables,
                       self.weighting)
        del tape
        if self.weighting == "famo":  # the losses after the step, on the same batch
            after = self.task_losses(inputs, ratings)
            self.famo.update(balancing.global_mean(task_losses), balancing.global_mean(after))
        self.trackers["loss"].update_state(total)
        for k, task in enumerate(self.tasks):
            self.trackers[f"{task}_loss"].update_state(task_losses[k])
            self.trackers[f"weight_{task}"].update_state(weights[k])
        return {name: tracker.result() for name, tracker in self.trackers.items()}


def serving(network: tf.keras.Model, user_ids: np.ndarray, movie_ids: np.ndarray, k: int):
    """(server, signature): raw user ids [B] int64 -> the top-k movies of the catalog by
    retrieval score, {"movies": [B, k] int64 raw ids, "retrieval_score",
    "ranking_score", "predicted_rating": [B, k] float32}. An unknown user id maps to
    code 0 (the padding row); movies already rated are not excluded.

    The catalog's retrieval vectors are computed once and frozen into a Dense layer
    (its bias keeps the padding column out of the top k): built-in layers only.
    """
    _, movie_tower = towers(network)
    catalog = movie_tower(tf.range(len(movie_ids) + 1)[tf.newaxis])[0].numpy()  # [M+1, D]
    raw = tf.keras.Input(shape=(), dtype=tf.int64, name="user")
    code = tf.cast(tf.keras.layers.IntegerLookup(
        vocabulary=[int(i) for i in user_ids], mask_token=None, num_oov_indices=1,
        name="user_code")(raw), tf.int32)
    # The network itself (not a tower sharing its layers: a .keras file then restores
    # the weights out of order) gives the user vector, with a dummy list of movies.
    user_vector = network({"user": code, "movie": tf.expand_dims(tf.zeros_like(code), 1)})[
        "user_vector"]
    scores = tf.keras.layers.Dense(len(catalog), trainable=False, name="catalog")(user_vector)
    k = min(k, len(movie_ids))
    top = tf.math.top_k(scores, k=k)
    movies = tf.cast(top.indices, tf.int32)
    heads = network({"user": code, "movie": movies})
    ids = tf.keras.layers.IntegerLookup(vocabulary=[int(i) for i in movie_ids],
                                        mask_token=None, num_oov_indices=1, invert=True,
                                        name="movie_id")(tf.cast(movies, tf.int64))
    server = tf.keras.Model(raw, {"movies": ids, "retrieval_score": top.values,
                                  "ranking_score": heads["ranking"],
                                  "predicted_rating": heads["rating"]}, name="server")
    bias = np.zeros(len(catalog), np.float32)
    bias[0] = -1e9
    server.get_layer("catalog").set_weights([catalog.T, bias])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user")])
    def serve(user):
        return server(user, training=False)

    return server, serve


def predict(network: tf.keras.Model, users: np.ndarray, movies: np.ndarray,
            num_movies: int, batch_size: int = 512) -> dict:
    """For users [N] (codes) and their lists movies [N, L] (codes, 0 padding), NumPy:
    {"retrieval": [N, M + 1] scores of the whole catalog (column 0 padding),
    "ranking": [N, L], "rating": [N, L]}."""
    user_tower, movie_tower = towers(network)
    catalog = movie_tower(tf.range(num_movies + 1)[tf.newaxis])[0].numpy()
    found = {"retrieval": [], "ranking": [], "rating": []}
    for start in range(0, len(users), batch_size):
        batch = {"user": tf.constant(users[start:start + batch_size], tf.int32),
                 "movie": tf.constant(movies[start:start + batch_size], tf.int32)}
        outputs = network(batch, training=False)
        found["retrieval"].append(outputs["user_vector"].numpy() @ catalog.T)
        found["ranking"].append(outputs["ranking"].numpy())
        found["rating"].append(outputs["rating"].numpy())
    return {name: np.concatenate(values).astype(np.float64) for name, values in found.items()}


def optimizer(learning_rate: float, weight_decay: float) -> tf.keras.optimizers.Optimizer:
    if weight_decay:
        return tf.keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    return tf.keras.optimizers.Adam(learning_rate)
