"""What a user does before tfq (benchmarks/own_model_and_folder.sh): a small residual, depthwise-separable
Keras model trained on their own image folder with Keras' own loader, taking raw 0..255 pixels."""

import sys

import tf_keras as keras

root, out = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
train = keras.utils.image_dataset_from_directory(f"{root}/train", image_size=(32, 32), batch_size=64, seed=0)
inputs = keras.Input((32, 32, 3))
h = keras.layers.Conv2D(24, 3, padding="same", use_bias=False)(inputs)
h = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(h))
for filters, stride in ((32, 2), (48, 2), (64, 2)):
    r = keras.layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(h)
    r = keras.layers.ReLU(6.0)(keras.layers.BatchNormalization()(r))
    r = keras.layers.Conv2D(filters, 1, use_bias=False)(r)
    r = keras.layers.BatchNormalization()(r)
    s = keras.layers.Conv2D(filters, 1, strides=stride)(h)
    h = keras.layers.ReLU()(keras.layers.Add()([s, r]))
h = keras.layers.GlobalAveragePooling2D()(h)
model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(h))
model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(train, epochs=8, verbose=2)
model.save(out)
print(model.count_params(), "parameters")
