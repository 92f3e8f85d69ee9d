@rem Gradle wrapper launcher (Windows). The jar is committed (provenance in
@rem gradle\wrapper\gradle-wrapper.properties and README.md); if it is ever missing run
@rem   gradle wrapper --gradle-version 8.11.1
@echo off
setlocal
set APP_HOME=%~dp0
set WRAPPER_JAR=%APP_HOME%gradle\wrapper\gradle-wrapper.jar
if not exist "%WRAPPER_JAR%" (
  echo error: %WRAPPER_JAR% is missing; run "gradle wrapper --gradle-version 8.11.1" here once ^(see README.md^) 1>&2
  exit /b 1
)
set JAVA_EXE=java.exe
if defined JAVA_HOME set JAVA_EXE=%JAVA_HOME%\bin\java.exe
"%JAVA_EXE%" %JAVA_OPTS% %GRADLE_OPTS% "-Dorg.gradle.appname=gradlew" -classpath "%WRAPPER_JAR%" org.gradle.wrapper.GradleWrapperMain %*
exit /b %ERRORLEVEL%
