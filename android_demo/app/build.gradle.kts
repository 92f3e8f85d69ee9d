import org.jetbrains.kotlin.gradle.dsl.JvmTarget
import org.jetbrains.kotlin.gradle.tasks.KotlinCompile

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "org.edgederm.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.edgederm.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // The model is memory-mapped from the APK, which needs it stored uncompressed.
    androidResources {
        noCompress.add("tflite")
    }
}

tasks.withType<KotlinCompile>().configureEach {
    compilerOptions {
        jvmTarget.set(JvmTarget.JVM_17)
    }
}

// The app cannot classify without the assets that `edge-derm export android` writes; say so early.
val modelAsset = file("src/main/assets/model.tflite")
tasks.named("preBuild") {
    doFirst {
        if (!modelAsset.isFile) {
            logger.warn(
                "warning: ${modelAsset.path} is missing; the app will only show how to add one. " +
                    "Run `edge-derm export android CONVERT_DIR --app android_demo` first."
            )
        }
    }
}

dependencies {
    // LiteRT (formerly TensorFlow Lite) for Android: the org.tensorflow.lite.Interpreter API, and its GPU
    // delegate (org.tensorflow.lite.gpu.GpuDelegate / CompatibilityList). One version for the family:
    // mixing LiteRT with org.tensorflow:tensorflow-lite-gpu would put the same classes in twice.
    val litert = "1.4.1"
    implementation("com.google.ai.edge.litert:litert:$litert")
    implementation("com.google.ai.edge.litert:litert-gpu:$litert")
    implementation("com.google.ai.edge.litert:litert-gpu-api:$litert")

    val camerax = "1.4.1"
    implementation("androidx.camera:camera-core:$camerax")
    implementation("androidx.camera:camera-camera2:$camerax")
    implementation("androidx.camera:camera-lifecycle:$camerax")
    implementation("androidx.camera:camera-view:$camerax")

    // ComponentActivity + enableEdgeToEdge (activity 1.8+), ViewCompat insets (core), the model in a
    // ViewModel observed through LiveData (lifecycle 2.8 is what activity 1.9 and CameraX 1.4 accept).
    implementation("androidx.core:core-ktx:1.13.1")
    implementation("androidx.activity:activity-ktx:1.9.3")
    val lifecycle = "2.8.7"
    implementation("androidx.lifecycle:lifecycle-viewmodel-ktx:$lifecycle")
    implementation("androidx.lifecycle:lifecycle-livedata-ktx:$lifecycle")
    implementation("androidx.lifecycle:lifecycle-runtime-ktx:$lifecycle")
    implementation("androidx.exifinterface:exifinterface:1.3.7")

    testImplementation("junit:junit:4.13.2")

    androidTestImplementation("androidx.test.ext:junit:1.2.1")
    androidTestImplementation("androidx.test:runner:1.6.2")
    androidTestImplementation("androidx.test:core:1.6.1")
}
