{
  description = "finetune-pipeline: reproducible LoRA/QLoRA fine-tuning on axolotl (dev shell and nox apps)";

  # The exact revision is in flake.lock; tests/test_pins.py checks it against the documented pin.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = import nixpkgs { inherit system; };

      # Same minor version as requirements.lock's header, the CPU image and the CI workflows.
      python = pkgs.python311;
      nox = python.pkgs.nox;

      # Shared libraries that PyPI's manylinux wheels (torch, bitsandbytes, tokenizers, numpy) expect
      # from the system. Python packages themselves come from requirements.lock, installed by nox.
      systemLibs = [
        pkgs.stdenv.cc.cc.lib # libstdc++, libgcc_s
        pkgs.zlib
        pkgs.zstd
        pkgs.bzip2
        pkgs.xz
        pkgs.libffi
        pkgs.openssl
      ];

      # NixOS exposes the host GPU driver (libcuda.so, libnvidia-ml.so) in /run/opengl-driver/lib.
      # Elsewhere set PIPELINE_DRIVER_LIB to a folder holding only the driver's libraries
      # (docs/docker-and-nix.md says how); a CPU machine needs neither.
      environment = ''
        pipeline_driver_lib="''${PIPELINE_DRIVER_LIB:-/run/opengl-driver/lib}"
        export LD_LIBRARY_PATH="${pkgs.lib.makeLibraryPath systemLibs}:$pipeline_driver_lib''${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        # Triton looks for libcuda through ldconfig, which knows nothing of Nix paths.
        if [ -e "$pipeline_driver_lib/libcuda.so.1" ]; then export TRITON_LIBCUDA_PATH="$pipeline_driver_lib"; fi
        unset pipeline_driver_lib
        export AXOLOTL_DO_NOT_TRACK=1
      '';

      tools = [ python nox pkgs.git pkgs.gcc pkgs.gnumake pkgs.which ];

      # `nix run .#smoke -- ARGS` is `nox -s smoke -- ARGS` in the dev shell's environment.
      noxScript = session: pkgs.writeShellApplication {
        name = "pipeline-${session}";
        runtimeInputs = tools;
        text = environment + ''
          exec nox -s ${session} -- "$@"
        '';
      };
      sessions = [ "smoke" "train" "tests" ];
      scripts = pkgs.lib.genAttrs sessions noxScript;
    in
    {
      devShells.${system}.default = pkgs.mkShell {
        packages = tools ++ systemLibs;
        shellHook = environment;
      };

      packages.${system} = scripts;

      apps.${system} = pkgs.lib.mapAttrs
        (session: script: { type = "app"; program = "${script}/bin/pipeline-${session}"; })
        scripts;

      formatter.${system} = pkgs.nixpkgs-fmt;
    };
}
